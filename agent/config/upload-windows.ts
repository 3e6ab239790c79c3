// The upload-window arithmetic: which minutes of the week (from Monday 00:00, the box's local time) a window of
// `share.uploadWindows` covers. The config's overlap check and agent/health/resource-policy.ts (which window is
// active now) share it, so both read a window the same way.

export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
export type Weekday = (typeof WEEKDAYS)[number];

/** The parts of an upload window the arithmetic reads (the whole type is `UploadWindow`, from the schema). */
export interface WindowTimes {
  /** "HH:MM" (validated), local time. */
  from: string;
  /** "HH:MM" or "24:00" (validated); earlier than `from`: the window crosses midnight. */
  to: string;
  /** The days the window starts on; absent: every day. */
  days?: readonly Weekday[];
}

export const MINUTES_PER_DAY = 24 * 60;
export const MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY;

/** "HH:MM" (already validated) -> minutes after midnight; "24:00" is 1440. */
export function timeToMinutes(time: string): number {
  return Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));
}

/**
 * The minutes of the week a window covers, as half-open spans [start, end) counted from Monday 00:00 local time,
 * none wrapping past Sunday 24:00 (a Sunday window that crosses midnight is two spans: its Sunday part and its
 * Monday morning). A window that crosses midnight belongs to the day it starts on: {from "22:00", to "06:00",
 * days ["fri"]} is Friday 22:00 to Saturday 06:00. Plain minute arithmetic on local wall-clock time: no dates, so
 * no daylight-saving cases here (the caller turns an instant into local time).
 */
export function uploadWindowSpans(window: WindowTimes): Array<[number, number]> {
  const from = timeToMinutes(window.from);
  let to = timeToMinutes(window.to);
  if (to <= from) to += MINUTES_PER_DAY;
  const spans: Array<[number, number]> = [];
  for (const day of window.days ?? WEEKDAYS) {
    const start = WEEKDAYS.indexOf(day) * MINUTES_PER_DAY + from;
    const end = start + (to - from);
    if (end <= MINUTES_PER_WEEK) spans.push([start, end]);
    else spans.push([start, MINUTES_PER_WEEK], [0, end - MINUTES_PER_WEEK]);
  }
  return spans;
}

function minuteOfWeekText(m: number): string {
  const minute = m % MINUTES_PER_DAY;
  return `${WEEKDAYS[Math.floor(m / MINUTES_PER_DAY)]} ${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
}

/**
 * The config's check of a whole list: an empty window, and windows that overlap (which rate would apply?), one
 * line each. `windows` holds undefined where an entry had its own problem (already reported); the others keep
 * their index in the file.
 */
export function checkUploadWindows(
  windows: readonly (WindowTimes | undefined)[],
  path: string,
  problems: string[],
): void {
  const owner = new Int16Array(MINUTES_PER_WEEK).fill(-1);
  windows.forEach((w, i) => {
    if (!w) return;
    const at = `${path}[${i}]`;
    if (timeToMinutes(w.from) === timeToMinutes(w.to)) {
      problems.push(
        `${at}: "from" and "to" are both ${JSON.stringify(w.from)}: an empty window (a whole day is "00:00" to "24:00")`,
      );
      return;
    }
    const reported = new Set<number>();
    for (const [start, end] of uploadWindowSpans(w)) {
      for (let m = start; m < end; m++) {
        const other = owner[m]!;
        if (other < 0) owner[m] = i;
        else if (!reported.has(other)) {
          reported.add(other);
          problems.push(`${at}: overlaps ${path}[${other}] (both cover ${minuteOfWeekText(m)})`);
        }
      }
    }
  });
}
