// The few WebAssembly JS API declarations the kernels use. Node has these globals, but @types/node 20 does not
// declare them and the DOM lib would bring browser globals into an agent that has none.
declare namespace WebAssembly {
  class Module {
    constructor(bytes: BufferSource);
  }
  class Instance {
    constructor(module: Module, imports?: Record<string, Record<string, unknown>>);
    readonly exports: Record<string, unknown>;
  }
  class Memory {
    readonly buffer: ArrayBuffer;
    /** Adds `pages` of 64 KiB; returns the old size in pages. Detaches the old `buffer`. */
    grow(pages: number): number;
  }
  function validate(bytes: BufferSource): boolean;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
