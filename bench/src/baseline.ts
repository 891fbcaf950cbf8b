import { execSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASELINE_REVISION } from './protocol.js';

/** The repository's root (this file runs from bench/dist/bench/src). */
export const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * Builds nestjs-pgln as of {@link BASELINE_REVISION} into bench/baseline (ignored by git), from this
 * repository's history, with this checkout's dependencies; returns the build's folder. Needs a git
 * checkout.
 */
export function buildBaseline(): string {
  const dir = join(ROOT, 'bench/baseline');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execSync(`git archive ${BASELINE_REVISION} lib tsconfig.json tsconfig.build.json | tar -x -C "${dir}"`, { cwd: ROOT });
  execSync(`npx tsc -p "${join(dir, 'tsconfig.build.json')}"`, { cwd: ROOT, stdio: 'inherit' });
  return join(dir, 'dist');
}
