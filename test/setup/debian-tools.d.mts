// Types for debian-tools.mjs (plain JavaScript so that `npm test` can run it before anything is built).
export declare const DEBIAN_TOOLS: Record<string, [pkg: string, why: string]>;
export declare function missingPackages(path?: string): string[];
export declare function ensureDebianTools(options?: { log?: (line: string) => void }): void;
export default function setup(): void;
