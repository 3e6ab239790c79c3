// Compiles and instantiates one embedded kernel. Synchronous on purpose: the kernels are small (tens of KB),
// a synchronous compile takes a few milliseconds, and a synchronous API keeps every hash call synchronous.

/** Decodes embedded base64 kernel bytes. */
export function kernelBytes(base64: string): Uint8Array {
  return Buffer.from(base64, "base64");
}

/** Instantiates a kernel that imports nothing but `env.abort` (AssemblyScript's assertion hook). */
export function instantiateKernel(bytes: Uint8Array, name: string): WebAssembly.Instance {
  const module = new WebAssembly.Module(bytes);
  return new WebAssembly.Instance(module, {
    env: {
      abort(_message: number, _file: number, line: number, column: number): never {
        throw new Error(`${name} kernel aborted at ${line}:${column}`);
      },
    },
  });
}
