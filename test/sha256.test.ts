import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SHA256_SIZE, createSha256, sha256, sha256Into } from "../agent/kernels/sha256.js";
import { randomBytes, rngFor, testSeed } from "./helpers/random";

// Every random input comes from this seed: a failure prints it, and SHA256_TEST_SEED=<seed> replays the run.
const SEED = testSeed("SHA256_TEST_SEED");

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "hex"));
const ascii = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "latin1"));
const nodeSha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");

/** Splits `data` into pieces of random sizes: many tiny ones around block edges, some larger than the 64 KiB buffer. */
function randomPieces(next: () => number, data: Uint8Array): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let offset = 0; offset < data.length || pieces.length === 0;) {
    const r = next();
    const size = r % 4 === 0 ? next() % (3 * 65536 + 1) : r % 4 === 1 ? next() % 8 : next() % 130;
    pieces.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

function streamed(pieces: Uint8Array[]): string {
  const hasher = createSha256();
  for (const piece of pieces) hasher.update(piece);
  return hex(hasher.digest());
}

describe("sha256 known answers", () => {
  // FIPS 180-4 examples (NIST "Examples with Intermediate Values", SHA256.pdf and SHA2_Additional.pdf).
  const fips: [string, Uint8Array, string][] = [
    ["empty", new Uint8Array(0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    ["abc", ascii("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    [
      "448-bit message",
      ascii("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ],
    [
      "896-bit message",
      ascii(
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
      ),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ],
  ];
  // NIST CAVP SHAVS byte-oriented vectors ("CAVS 11.0", shabytetestvectors.zip from
  // https://csrc.nist.gov/projects/cryptographic-algorithm-validation-program/secure-hashing):
  // SHA256ShortMsg.rsp, Len = 8 ... 512 bits, and the first entry of SHA256LongMsg.rsp (Len = 1304).
  // Len 440/448/504/512 sit on either side of the 55/56-byte padding edge and the 64-byte block edge.
  const cavp: [number, string, string][] = [
    [8, "d3", "28969cdfa74a12c82f3bad960b0b000aca2ac329deea5c2328ebc6f2ba9802c1"],
    [16, "11af", "5ca7133fa735326081558ac312c620eeca9970d1e70a4b95533d956f072d1f98"],
    [24, "b4190e", "dff2e73091f6c05e528896c4c831b9448653dc2ff043528f6769437bc7b975c2"],
    [32, "74ba2521", "b16aa56be3880d18cd41e68384cf1ec8c17680c45a02b1575dc1518923ae8b0e"],
    [64, "5738c929c4f4ccb6", "963bb88f27f512777aab6c8b1a02c70ec0ad651d428f870036e1917120fb48bf"],
    [128, "0a27847cdc98bd6f62220b046edd762b", "80c25ec1600587e7f28b18b1b18e3cdc89928e39cab3bc25e4d4a4c139bcedc4"],
    [
      256,
      "09fc1accc230a205e4a208e64a8f204291f581a12756392da4b8c0cf5ef02b95",
      "4f44c1c7fbebb6f9601829f3897bfd650c56fa07844be76489076356ac1886a4",
    ],
    [
      440,
      "3ebfb06db8c38d5ba037f1363e118550aad94606e26835a01af05078533cc25f2f39573c04b632f62f68c294ab31f2a3e2a1a0d8c2be51",
      "6595a2ef537a69ba8583dfbf7f5bec0ab1f93ce4c8ee1916eff44a93af5749c4",
    ],
    [
      448,
      "2d52447d1244d2ebc28650e7b05654bad35b3a68eedc7f8515306b496d75f3e73385dd1b002625024b81a02f2fd6dffb6e6d561cb7d0bd7a",
      "cfb88d6faf2de3a69d36195acec2e255e2af2b7d933997f348e09f6ce5758360",
    ],
    [
      504,
      "e2f76e97606a872e317439f1a03fcd92e632e5bd4e7cbc4e97f1afc19a16fde92d77cbe546416b51640cddb92af996534dfd81edb17c4424cf1ac4d75aceeb",
      "18041bd4665083001fba8c5411d2d748e8abbfdcdfd9218cb02b68a78e7d4c23",
    ],
    [
      512,
      "5a86b737eaea8ee976a0a24da63e7ed7eefad18a101c1211e2b3650c5187c2a8a650547208251f6d4237e661c7bf4c77f335390394c37fa1a9f9be836ac28509",
      "42e61e174fbb3897d6dd6cef3dd2802fe67b331953b06114a65c772859dfc1aa",
    ],
    [
      1304,
      "451101250ec6f26652249d59dc974b7361d571a8101cdfd36aba3b5854d3ae086b5fdd4597721b66e3c0dc5d8c606d9657d0e323283a5217d1f53f2f284f57b85c8a61ac8924711f895c5ed90ef17745ed2d728abd22a5f7a13479a462d71b56c19a74a40b655c58edfe0a188ad2cf46cbf30524f65d423c837dd1ff2bf462ac4198007345bb44dbb7b1c861298cdf61982a833afc728fae1eda2f87aa2c9480858bec",
      "3c593aa539fdcdae516cdf2f15000f6634185c88f505b39775fb9ab137a10aa2",
    ],
  ];
  const vectors: [string, Uint8Array, string][] = [
    ...fips,
    ...cavp.map(([bits, msg, md]): [string, Uint8Array, string] => [`CAVP Len = ${bits}`, fromHex(msg), md]),
  ];

  it.each(vectors)("%s: one-shot, into a buffer, and fed one byte at a time", (_name, message, digest) => {
    expect(hex(sha256(message))).toBe(digest);
    const out = new Uint8Array(SHA256_SIZE);
    sha256Into(message, out);
    expect(hex(out)).toBe(digest);
    const hasher = createSha256();
    for (let i = 0; i < message.length; i++) hasher.update(message.subarray(i, i + 1));
    expect(hex(hasher.digest())).toBe(digest);
  });

  it("one million 'a' (FIPS 180-4): one-shot and in 1000 updates of 1000 bytes", () => {
    const digest = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    const million = new Uint8Array(1_000_000).fill(0x61);
    expect(hex(sha256(million))).toBe(digest);
    const hasher = createSha256();
    for (let i = 0; i < million.length; i += 1000) hasher.update(million.subarray(i, i + 1000));
    expect(hex(hasher.digest())).toBe(digest);
  });
});

describe("sha256 against node:crypto", () => {
  const lengths = [
    0,
    1,
    55,
    56,
    63,
    64,
    65,
    119,
    120,
    1023,
    1024,
    1025,
    4095,
    4096,
    4097,
    65535,
    65536,
    65537,
    (1 << 20) + 7,
    (16 << 20) + 3,
  ];

  it.each(lengths)("%i random bytes, one-shot and streamed in random pieces", (length) => {
    const next = rngFor(SEED, `length ${length}`);
    const data = randomBytes(next, length);
    const expected = nodeSha256(data);
    const context = `seed ${SEED}, length ${length}`;
    expect(hex(sha256(data)), context).toBe(expected);
    for (let round = 0; round < 3; round++) {
      expect(streamed(randomPieces(next, data)), `${context}, piece round ${round}`).toBe(expected);
    }
  });

  it("many short inputs of every length from 0 to 300", () => {
    const next = rngFor(SEED, "short");
    for (let length = 0; length <= 300; length++) {
      const data = randomBytes(next, length);
      expect(hex(sha256(data)), `seed ${SEED}, length ${length}`).toBe(nodeSha256(data));
    }
  });

  it("reads only the viewed bytes of a subarray and of a Buffer", () => {
    const next = rngFor(SEED, "views");
    const backing = randomBytes(next, 70_000);
    for (const [start, end] of [
      [1, 2],
      [3, 67],
      [13, 65_549],
      [100, 69_999],
    ] as const) {
      const view = backing.subarray(start, end);
      const expected = nodeSha256(view);
      expect(hex(sha256(view)), `seed ${SEED}, view ${start}..${end}`).toBe(expected);
      expect(hex(sha256(Buffer.from(view))), `seed ${SEED}, Buffer ${start}..${end}`).toBe(expected);
    }
  });
});

describe("sha256 length field", () => {
  // The byte count crosses 2^29 (where a 32-bit bit length would wrap) and 2^32 (a 32-bit byte count).
  // Expected digest: `head -c 4294968296 /dev/zero | sha256sum` (GNU coreutils), i.e. 2^32 + 1000 zero bytes.
  it("counts past 4 GiB", { timeout: 180_000 }, () => {
    const zeros = new Uint8Array(16 << 20);
    const hasher = createSha256();
    for (let i = 0; i < 256; i++) hasher.update(zeros);
    hasher.update(zeros.subarray(0, 1000));
    expect(hex(hasher.digest())).toBe("47330b4e9578d8ea3b771713efa25d0e2f03a554c9b3c66308f82fa0986dc027");
  });
});

describe("Sha256Hasher", () => {
  it("keeps interleaved hashers apart, with one-shot calls in between", () => {
    const next = rngFor(SEED, "interleaved");
    const inputs = [100_000, 3, 200_001, 0, 64].map((length) => randomBytes(next, length));
    const piecesOf = inputs.map((data) => randomPieces(next, data));
    const hashers = inputs.map(() => createSha256());
    // One piece for each hasher in turn, so every update switches the state in kernel memory.
    for (let round = 0; piecesOf.some((pieces) => round < pieces.length); round++) {
      piecesOf.forEach((pieces, i) => {
        if (round < pieces.length) hashers[i]!.update(pieces[round]!);
      });
      if (round % 3 === 0) {
        const extra = randomBytes(next, next() % 2000);
        expect(hex(sha256(extra)), `seed ${SEED}, one-shot in round ${round}`).toBe(nodeSha256(extra));
      }
    }
    hashers.forEach((hasher, i) =>
      expect(hex(hasher.digest()), `seed ${SEED}, hasher ${i}`).toBe(nodeSha256(inputs[i]!)),
    );
  });

  it("digests the same bytes the same way however they are split", () => {
    const data = randomBytes(rngFor(SEED, "split"), 1000);
    const expected = nodeSha256(data);
    for (let split = 0; split <= data.length; split += 37) {
      const hasher = createSha256().update(data.subarray(0, split)).update(data.subarray(split));
      expect(hex(hasher.digest()), `seed ${SEED}, split at ${split}`).toBe(expected);
    }
  });

  it("digests an untouched hasher and empty updates as the empty message", () => {
    const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    expect(hex(createSha256().digest())).toBe(empty);
    expect(hex(createSha256().update(new Uint8Array(0)).update(new Uint8Array(0)).digest())).toBe(empty);
  });

  it("refuses update and digest after digest", () => {
    const hasher = createSha256().update(ascii("abc"));
    expect(hex(hasher.digest())).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(() => hasher.digest()).toThrow(/already digested/);
    expect(() => hasher.digestInto(new Uint8Array(32))).toThrow(/already digested/);
    expect(() => hasher.update(ascii("more"))).toThrow(/already digested/);
    // The failed calls must not have disturbed anyone else.
    expect(hex(createSha256().update(ascii("abc")).digest())).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });

  it("writes the digest into the first 32 bytes of a larger buffer, and rejects a short one", () => {
    const out = new Uint8Array(40).fill(0xee);
    createSha256().update(ascii("abc")).digestInto(out);
    expect(hex(out.subarray(0, 32))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect([...out.subarray(32)]).toEqual(new Array(8).fill(0xee));
    sha256Into(new Uint8Array(0), out);
    expect(hex(out.subarray(0, 32))).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect(() => sha256Into(ascii("abc"), new Uint8Array(31))).toThrow(RangeError);
    const hasher = createSha256().update(ascii("abc"));
    expect(() => hasher.digestInto(new Uint8Array(31))).toThrow(RangeError);
    // A rejected output buffer leaves the hasher usable.
    expect(hex(hasher.digest())).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});
