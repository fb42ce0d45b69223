/**
 * The single file (scripts/package.sh → build/dsys) for tests: built once per test process, and
 * run the way a machine with nothing else would run it, with a bare environment and, in
 * {@linkcode runHidden}, a mount namespace where the repository (with its Deno) and the host's
 * copies of every library the file carries are not there.
 * @module
 */

/** The repository's root (with a trailing slash). */
export const root = new URL("..", import.meta.url).pathname;

const dec = new TextDecoder();
let built: Promise<string> | undefined;

/**
 * Runs scripts/package.sh once per process and returns build/dsys's path. (About 3 s once the
 * Deno archive is cached in build/.package, 10 s before; measured under the suite's load.)
 */
export function packagedDsys(): Promise<string> {
  built ??= (async () => {
    const r = await new Deno.Command("bash", {
      args: [`${root}scripts/package.sh`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(`scripts/package.sh failed:\n${dec.decode(r.stderr)}`);
    return `${root}build/dsys`;
  })();
  return built;
}

/** Copies the file alone into a new temp dir; returns the copy's path. */
export async function copyAlone(prefix = "dsys-pkg-"): Promise<string> {
  const src = await packagedDsys();
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.copyFile(src, `${dir}/dsys`);
  await Deno.chmod(`${dir}/dsys`, 0o755);
  return `${dir}/dsys`;
}

/**
 * The environment of a bare machine: system directories on PATH, HOME and the cache in `home`,
 * nothing of this process (no Deno, no DSYS_*, no repository path).
 */
export function bareEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: home,
    XDG_CACHE_HOME: `${home}/cache`,
    ...extra,
  };
}

/** A finished command: exit code and output. */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd` with exactly `env`, in `cwd`; kills it after `timeoutMs` (a hang becomes a failure
 * that says so, never a wait without end) or when `stop` aborts.
 */
export async function runBare(
  cmd: string[],
  env: Record<string, string>,
  cwd: string,
  timeoutMs = 180_000,
  stop?: AbortSignal,
): Promise<Ran> {
  const r = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env,
    clearEnv: true,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(stop ? [stop] : [])]),
  }).output();
  const killed = r.signal
    ? `\n(${cmd.join(" ")}: killed by ${r.signal} after ${timeoutMs} ms)`
    : "";
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) + killed };
}

/**
 * The host's files of the libraries the package carries (libzmq, what it and libfuse3 link
 * against, minus glibc's own): what ldd says, as scripts/package.sh computes it.
 */
export async function hostLibraries(): Promise<string[]> {
  const ldconfig = await new Deno.Command("/sbin/ldconfig", { args: ["-p"], stdout: "piped" })
    .output();
  const zmq = dec.decode(ldconfig.stdout).split("\n")
    .find((l) => l.trim().startsWith("libzmq.so.5 ") && l.includes("x86-64"))
    ?.split("=> ")[1]?.trim();
  if (!zmq) throw new Error("no libzmq.so.5 on this host (scripts/bootstrap.sh installs it)");
  const ldd = await new Deno.Command("ldd", {
    args: [zmq, `${root}build/libdsys_fuse.so`],
    stdout: "piped",
  }).output();
  const glibc =
    /^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libgcc_s)[.-]/;
  const paths = new Set([zmq]);
  for (const line of dec.decode(ldd.stdout).split("\n")) {
    const m = line.trim().match(/^(\S+) => (\/\S+)/);
    if (m && !glibc.test(m[1])) paths.add(m[2]);
  }
  return await Promise.all([...paths].map((p) => Deno.realPath(p)));
}

/**
 * Runs `cmd` in a new mount namespace where the repository is an empty tmpfs (so its Deno and
 * sources are gone) and every file of {@linkcode hostLibraries} is /dev/null, with exactly
 * `env`, in `cwd`. The script checks both before it runs `cmd` (exit 99 if not), so a pass
 * cannot come from a hiding that silently did not happen.
 */
export async function runHidden(
  cmd: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<Ran> {
  const libs = await hostLibraries();
  const script = [
    "set -eu",
    `mount -t tmpfs dsys-hidden "$1"`,
    `[ ! -e "$1/mod.ts" ] || exit 99`,
    `for lib in ${libs.map((l) => `'${l}'`).join(" ")}; do`,
    `  mount --bind /dev/null "$lib"`,
    `  [ -c "$lib" ] || exit 99`,
    "done",
    'shift; cd "$1"; shift',
    'exec "$@"',
  ].join("\n");
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return await runBare(
    [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
      "sh",
      root.replace(/\/$/, ""),
      cwd,
      "env",
      "-i",
      ...envArgs,
      ...cmd,
    ],
    { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    "/",
  );
}
