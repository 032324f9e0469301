/** Types of bin/young-generation.js (plain JavaScript: bin/ runs before any TypeScript loader). */
export function capYoungGeneration(execArgv?: readonly string[], nodeOptions?: string): boolean;
export function isHostCommand(args: readonly string[]): boolean;
