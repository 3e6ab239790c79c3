// MQTT topic names of protocol version 1 (agent/link/README.md, "Topics"): builders for the device and the fleet,
// and a strict parser for topics that arrive from the broker. Pure.
//
// Everything lives under `sharenode/v1/{deviceId}/`. Names (of commands, reply suffixes, share groups) are one
// topic level: never empty, never a wildcard or a separator, never a control character, so that a name can never
// widen a subscription or move a publication to another level.

export const TOPIC_ROOT = "sharenode/v1";
/** The longest command name, reply suffix or share group, in UTF-16 code units. */
export const MAX_NAME_LENGTH = 128;

/** What the device publishes, one topic each, and what it receives (`cmd`). */
export type TopicKind = "state" | "telemetry" | "events" | "reply" | "cmd";
/** The device -> fleet streams a consumer subscribes to. */
export type FleetStream = "state" | "telemetry" | "events" | "reply";

export interface DeviceTopics {
  state: string;
  telemetry: string;
  events: string;
  /** The reply topic of MQTT 3.1.1 commands (MQTT 5 commands name a response topic under `reply/`). */
  reply: string;
  /** `.../cmd/+`: the device's one subscription. */
  cmdFilter: string;
  /** `.../cmd/{name}`; throws a RangeError for an invalid name. */
  cmd(name: string): string;
  /** `.../reply/{name}`, a response topic a fleet service may name; throws a RangeError for an invalid name. */
  replyTo(name: string): string;
}

export interface ParsedTopic {
  deviceId: string;
  kind: TopicKind;
  /** The command name (kind "cmd", always present) or the reply suffix (kind "reply", when there is one). */
  name?: string;
}

const DEVICE_ID = /^[0-9a-f]{32}$/;
// + # / would act as wildcards or separators; C0 and C1 controls (NUL among them) are forbidden or discouraged
// in MQTT topic names (MQTT 5 section 4.7.3); lone surrogates cannot be encoded as UTF-8 at all.
const FORBIDDEN_IN_NAME =
  /[+#/\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** True when `id` is a device id: 32 lowercase hex digits. */
export function isDeviceId(id: unknown): id is string {
  return typeof id === "string" && DEVICE_ID.test(id);
}

/** True when `name` can be one topic level of ours: 1..128 characters, no + # / and no control characters. */
export function isValidName(name: unknown): name is string {
  return typeof name === "string" && name.length > 0 && name.length <= MAX_NAME_LENGTH && !FORBIDDEN_IN_NAME.test(name);
}

/** The topics of one device. Throws a RangeError when deviceId is not 32 lowercase hex digits. */
export function topicsFor(deviceId: string): DeviceTopics {
  const base = deviceBase(deviceId);
  return Object.freeze({
    state: `${base}/state`,
    telemetry: `${base}/telemetry`,
    events: `${base}/events`,
    reply: `${base}/reply`,
    cmdFilter: `${base}/cmd/+`,
    cmd: (name: string) => `${base}/cmd/${checkName(name, "command name")}`,
    replyTo: (name: string) => `${base}/reply/${checkName(name, "reply topic suffix")}`,
  });
}

/**
 * Parses a topic name (not a filter) of protocol version 1; undefined for anything else: another root or version,
 * a malformed device id, an unknown kind, a missing or invalid name, extra levels.
 */
export function parseTopic(topic: unknown): ParsedTopic | undefined {
  if (typeof topic !== "string" || !topic.startsWith(`${TOPIC_ROOT}/`)) return undefined;
  const levels = topic.slice(TOPIC_ROOT.length + 1).split("/");
  const [deviceId, kind, name, ...rest] = levels;
  if (!isDeviceId(deviceId) || rest.length > 0) return undefined;
  switch (kind) {
    case "state":
    case "telemetry":
    case "events":
      return name === undefined ? { deviceId, kind } : undefined;
    case "reply":
      if (name === undefined) return { deviceId, kind };
      return isValidName(name) ? { deviceId, kind, name } : undefined;
    case "cmd":
      return isValidName(name) ? { deviceId, kind, name } : undefined;
    default:
      return undefined;
  }
}

/**
 * The filter a fleet consumer subscribes to for one stream of every device: `sharenode/v1/+/events`; replies
 * `sharenode/v1/+/reply/#` (which also matches the bare `reply` topic).
 */
export function fleetFilter(stream: FleetStream): string {
  switch (stream) {
    case "state":
    case "telemetry":
    case "events":
      return `${TOPIC_ROOT}/+/${stream}`;
    case "reply":
      return `${TOPIC_ROOT}/+/reply/#`;
    default:
      throw new RangeError(`unknown stream ${JSON.stringify(String(stream))}`);
  }
}

/**
 * The shared-subscription filter (MQTT 5, and mosquitto >= 2 for 3.1.1 clients) that spreads one stream over the
 * consumers of `group`: `$share/{group}/sharenode/v1/+/events`. Retained messages are not delivered to a shared
 * subscription (MQTT 5 section 4.8.2), so state consumers that need the retained state subscribe without one.
 */
export function sharedFilter(group: string, stream: FleetStream): string {
  return `$share/${checkName(group, "share group")}/${fleetFilter(stream)}`;
}

function deviceBase(deviceId: string): string {
  if (!isDeviceId(deviceId))
    throw new RangeError(`device id must be 32 lowercase hex digits, got ${describeName(deviceId)}`);
  return `${TOPIC_ROOT}/${deviceId}`;
}

function checkName(name: string, what: string): string {
  if (!isValidName(name)) {
    throw new RangeError(
      `${what} must be 1..${MAX_NAME_LENGTH} characters without + # / or control characters, got ${describeName(name)}`,
    );
  }
  return name;
}

function describeName(value: unknown): string {
  if (typeof value !== "string") return value === null ? "null" : `a ${typeof value}`;
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
}
