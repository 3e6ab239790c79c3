// Types of prng.mjs (see there).
export declare function prng(seed: number): () => number;
export declare function randomBytes(next: () => number, length: number): Uint8Array;
export declare function seededBytes(length: number, seed: number): Buffer;
export declare function shuffled<T>(items: readonly T[], next: () => number): T[];
