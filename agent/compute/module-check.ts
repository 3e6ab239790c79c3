// What a compute task's WebAssembly module may be (issue 14), decided from its bytes before it runs: it imports
// nothing but the host API (HOST_IMPORTS), and its memory has a declared maximum at or below the cap. The memory's
// limits are not in WebAssembly.Module's reflection API, so the import and memory sections are read here (the
// binary format's section layout and LEB128 integers, WebAssembly core spec 5.5).

/** The only functions a task may import: `sharenode.*` (the host API) and AssemblyScript's `env.abort`. */
export const HOST_IMPORTS: ReadonlySet<string> = new Set([
  "sharenode.input_length",
  "sharenode.read_input",
  "sharenode.write_output",
  "sharenode.abort",
  "env.abort",
]);

const PAGE = 64 * 1024;

export type ModuleVerdict =
  | { ok: true; module: WebAssembly.Module; maxMemoryBytes: number }
  | { ok: false; code: "bad-module" | "forbidden-import" | "unbounded-memory" | "memory-over-cap"; reason: string };

/**
 * Compiles `bytes` (or takes `compiled`, the same bytes compiled before) and checks its imports and memory against
 * the host API and `memoryCapBytes`.
 */
export function checkModule(bytes: Uint8Array, memoryCapBytes: number, compiled?: WebAssembly.Module): ModuleVerdict {
  let module: WebAssembly.Module;
  try {
    module = compiled ?? new WebAssembly.Module(bytes);
  } catch (err) {
    return { ok: false, code: "bad-module", reason: `not a WebAssembly module: ${(err as Error).message}` };
  }
  // WebAssembly.Module.imports is in every engine (JS API spec) but not in this TypeScript lib.
  const reflect = WebAssembly.Module as unknown as {
    imports(m: WebAssembly.Module): { module: string; name: string; kind: string }[];
  };
  for (const imp of reflect.imports(module)) {
    const name = `${imp.module}.${imp.name}`;
    if (imp.kind === "memory") continue; // checked below, with the module's own memory
    if (imp.kind !== "function" || !HOST_IMPORTS.has(name))
      return { ok: false, code: "forbidden-import", reason: `imports ${imp.kind} ${name}: only the host API is there` };
  }
  let memories: { max: number | undefined }[];
  try {
    memories = memoryLimits(bytes);
  } catch (err) {
    return { ok: false, code: "bad-module", reason: (err as Error).message };
  }
  if (memories.length === 0) return { ok: true, module, maxMemoryBytes: 0 };
  const max = memories[0]!.max;
  if (max === undefined)
    return { ok: false, code: "unbounded-memory", reason: "its memory declares no maximum (compile with one)" };
  if (max * PAGE > memoryCapBytes)
    return {
      ok: false,
      code: "memory-over-cap",
      reason: `its memory may grow to ${max * PAGE} bytes, over the cap of ${memoryCapBytes}`,
    };
  return { ok: true, module, maxMemoryBytes: max * PAGE };
}

/** The limits of every memory a module imports or defines, in pages. */
export function memoryLimits(bytes: Uint8Array): { min: number; max: number | undefined }[] {
  const r = new Reader(bytes);
  if (r.u32le() !== 0x6d736100) throw new Error("not a WebAssembly module (bad magic)");
  r.u32le(); // version
  const out: { min: number; max: number | undefined }[] = [];
  while (!r.done) {
    const id = r.byte();
    const size = r.leb();
    const end = r.at + size;
    if (id === 2) {
      // import section: vec(import), import = module name, field name, importdesc
      for (let n = r.leb(); n > 0; n--) {
        r.skip(r.leb());
        r.skip(r.leb());
        const kind = r.byte();
        if (kind === 0) r.leb();
        else if (kind === 1) {
          r.byte();
          r.limits();
        } else if (kind === 2) out.push(r.limits());
        else if (kind === 3) r.skip(2);
        else throw new Error(`import of unknown kind ${kind}`);
      }
    } else if (id === 5) {
      for (let n = r.leb(); n > 0; n--) out.push(r.limits());
    }
    r.at = end;
  }
  return out;
}

class Reader {
  at = 0;
  constructor(private readonly b: Uint8Array) {}
  get done(): boolean {
    return this.at >= this.b.length;
  }
  byte(): number {
    if (this.at >= this.b.length) throw new Error("truncated WebAssembly module");
    return this.b[this.at++]!;
  }
  u32le(): number {
    return (this.byte() | (this.byte() << 8) | (this.byte() << 16) | (this.byte() << 24)) >>> 0;
  }
  leb(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 35) throw new Error("malformed LEB128 integer");
    }
  }
  skip(n: number): void {
    this.at += n;
  }
  limits(): { min: number; max: number | undefined } {
    const flags = this.byte();
    const min = this.leb();
    // flags bit 0: a maximum follows (bit 1: shared, which needs one too).
    return { min, max: flags & 1 ? this.leb() : undefined };
  }
}
