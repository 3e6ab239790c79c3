// Stands in for `lru-cache` in the device bundle (agent/tsup.config.mjs). mqtt.js uses it in one place: the MQTT 5
// topic-alias table it builds when the broker's CONNACK offers aliases (mosquitto offers 10). The agent never
// sends with an alias (they stay off: acknowledged records were lost with Debian's mosquitto), so the table
// stays empty, but it is still built. lru-cache is 16.7 KB of the bundle; what mqtt.js calls of it is below:
// `new LRUCache({ max })`, get (which makes the entry the most recent), set, size, clear, and keys() from the most
// to the least recently used. test/lru-for-mqtt.test.ts runs random operations on this and on lru-cache itself and
// requires the same answers.
"use strict";

class LRUCache {
  constructor(options) {
    if (!options || !Number.isInteger(options.max) || options.max < 1)
      throw new TypeError("max must be a positive integer");
    this.max = options.max;
    // A Map keeps insertion order: the last entry is the most recently used.
    this.entries = new Map();
  }

  get size() {
    return this.entries.size;
  }

  get(key) {
    if (!this.entries.has(key)) return undefined;
    const value = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, value);
    return value;
  }

  set(key, value) {
    // lru-cache never stores undefined: setting it deletes the key.
    if (value === undefined) {
      this.entries.delete(key);
      return this;
    }
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value);
    return this;
  }

  has(key) {
    return this.entries.has(key);
  }

  delete(key) {
    return this.entries.delete(key);
  }

  clear() {
    this.entries.clear();
  }

  *keys() {
    const keys = [...this.entries.keys()];
    for (let i = keys.length - 1; i >= 0; i--) yield keys[i];
  }
}

module.exports = { LRUCache };
