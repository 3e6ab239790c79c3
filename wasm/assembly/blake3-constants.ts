// BLAKE3 constants (BLAKE3 specification, section 2).

/** The initialisation vector: the same first 8 words as SHA-256's. */
export const IV0: u32 = 0x6a09e667;
export const IV1: u32 = 0xbb67ae85;
export const IV2: u32 = 0x3c6ef372;
export const IV3: u32 = 0xa54ff53a;
export const IV4: u32 = 0x510e527f;
export const IV5: u32 = 0x9b05688c;
export const IV6: u32 = 0x1f83d9ab;
export const IV7: u32 = 0x5be0cd19;

export const CHUNK_START: u32 = 1 << 0;
export const CHUNK_END: u32 = 1 << 1;
export const PARENT: u32 = 1 << 2;
export const ROOT: u32 = 1 << 3;
export const KEYED_HASH: u32 = 1 << 4;
export const DERIVE_KEY_CONTEXT: u32 = 1 << 5;
export const DERIVE_KEY_MATERIAL: u32 = 1 << 6;

export const BLOCK_LEN: i32 = 64;
export const CHUNK_LEN: i32 = 1024;
