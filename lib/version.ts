/**
 * dsys's version, and the commit a build was made from.
 * @module
 */

/** The release version (bumped by hand when a release is cut). */
export const VERSION = "0.1.0";

/**
 * The commit `scripts/package.sh` built this from (`git rev-parse`, `+dirty` with local changes),
 * filled in by esbuild's `--define`; null when running from the source tree, which is no build.
 */
export const BUILD_COMMIT: string | null = (globalThis as { DSYS_COMMIT?: string }).DSYS_COMMIT ??
  null;

/** The `dsys --version` line. */
export function versionLine(): string {
  return `dsys ${VERSION} (${BUILD_COMMIT ? `commit ${BUILD_COMMIT}` : "source tree"})`;
}
