// Stands in, in the device bundle (agent/tsup.config.mjs), for two packages mqtt.js requires but the agent never
// runs: `worker-timers` (timers in a browser's web worker) and `socks` (MQTT through a SOCKS proxy, an option the
// agent's config does not offer). Both are required when mqtt.js loads, used only on those paths; leaving them
// out saves about 85 KB that every box would store twice (two release slots) and parse at every start.
module.exports = {};
