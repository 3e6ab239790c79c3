// The object store's index: which objects the store holds, kept as records in the durable RecordLog, so that
// used space is a sum over the index (never a walk of the disk) and a power cut loses nothing acknowledged.
//
// Records (JSON, one per log frame; short keys because the log lives on a slow USB disk):
//   {"o":"begin","id":H,"len":N}        an ingest is about to place files under objects/; written first, so that
//                                        start-up knows exactly which paths a crash may have left half-done
//   {"o":"add","id":H,"len":N,"pin":B,"at":T,"used":T}   the object is complete and durable
//   {"o":"abort","id":H}                 a begun ingest was rolled back
//   {"o":"del","id":H}                   the object is being removed (written before its files are unlinked)
//   {"o":"pin","id":H,"pin":B}           pinned objects are never evicted
//   {"o":"bad","id":H,"reason":S}        scrub found it corrupt; its files are in quarantine/
// Compaction rewrites the log as one "add" per live object (carrying its last-use time).

export interface IndexEntry {
  id: string;
  length: number;
  pinned: boolean;
  /** When the object was added (epoch ms). */
  addedAt: number;
  /** Last time it was read or proven (epoch ms); kept in memory, persisted at compaction. */
  usedAt: number;
}

export type IndexRecord =
  | { o: "begin"; id: string; len: number }
  | { o: "add"; id: string; len: number; pin: boolean; at: number; used?: number }
  | { o: "abort"; id: string }
  | { o: "del"; id: string }
  | { o: "pin"; id: string; pin: boolean }
  | { o: "bad"; id: string; reason: string };

const ID_PATTERN = /^[0-9a-f]{64}$/;

export function encodeRecord(record: IndexRecord): Uint8Array {
  return Buffer.from(JSON.stringify(record), "utf8");
}

/** Parses one record; a record that does not parse is reported, not trusted (the CRC passed, so it is a bug). */
export function decodeRecord(bytes: Uint8Array): IndexRecord {
  const value = JSON.parse(
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"),
  ) as IndexRecord;
  if (
    typeof value !== "object" ||
    value === null ||
    typeof value.o !== "string" ||
    typeof value.id !== "string" ||
    !ID_PATTERN.test(value.id)
  ) {
    throw new Error(`index record is malformed: ${JSON.stringify(value).slice(0, 120)}`);
  }
  return value;
}

/** The state of the index after replaying its records. */
export interface ReplayResult {
  live: Map<string, IndexEntry>;
  /** Ingests begun and neither added nor aborted: their paths must be checked at start-up. */
  pending: Map<string, number>;
  /** Objects deleted or quarantined since the last compaction: their files must be gone. */
  removed: Set<string>;
}

export function replay(records: Iterable<IndexRecord>): ReplayResult {
  const live = new Map<string, IndexEntry>();
  const pending = new Map<string, number>();
  const removed = new Set<string>();
  for (const r of records) {
    switch (r.o) {
      case "begin":
        pending.set(r.id, r.len);
        break;
      case "add":
        pending.delete(r.id);
        removed.delete(r.id);
        live.set(r.id, { id: r.id, length: r.len, pinned: r.pin, addedAt: r.at, usedAt: r.used ?? r.at });
        break;
      case "abort":
        pending.delete(r.id);
        break;
      case "del":
      case "bad":
        live.delete(r.id);
        pending.delete(r.id);
        removed.add(r.id);
        break;
      case "pin": {
        const entry = live.get(r.id);
        if (entry) entry.pinned = r.pin;
        break;
      }
    }
  }
  return { live, pending, removed };
}
