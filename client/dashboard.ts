/**
 * `dsys dashboard [--url http://HOST:PORT] [--token-file FILE]`: prints the URL that logs in to
 * a master's web dashboard (roles/master/dashboard.ts), and opens it in a browser when there is a
 * display and `xdg-open`. Where from: the flags, else the cluster file (`dsys dev --keep
 * --dashboard` writes `dashboard` and `dashboardTokenFile` there). The token is the master's
 * `<data>/dashboard.token`: whoever may read that file may see the dashboard.
 */
import { parseArgs } from "node:util";
import { clusterFilePath } from "./cluster.ts";

/** Runs `dsys dashboard`; returns the exit code. */
export async function runDashboard(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      url: { type: "string" },
      "token-file": { type: "string" },
      "no-open": { type: "boolean", default: false },
    },
  });
  let file: { dashboard?: string; dashboardTokenFile?: string } = {};
  try {
    file = JSON.parse(await Deno.readTextFile(clusterFilePath()));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      console.error(`dsys dashboard: cannot read ${clusterFilePath()}: ${e}`);
      return 1;
    }
  }
  const url = values.url ?? file.dashboard;
  const tokenFile = values["token-file"] ?? file.dashboardTokenFile;
  if (!url || !tokenFile) {
    console.error(
      "dsys dashboard: no dashboard known: give --url http://HOST:PORT (a master's " +
        "--dashboard-listen) and --token-file (its <data>/dashboard.token), or start " +
        "`dsys dev --keep --dashboard`",
    );
    return 1;
  }
  if (!/^http:\/\/[^/?#]+\/?$/.test(url)) {
    console.error(`dsys dashboard: --url ${url} is not http://HOST:PORT`);
    return 1;
  }
  let token: string;
  try {
    token = (await Deno.readTextFile(tokenFile)).trim();
  } catch (e) {
    console.error(`dsys dashboard: cannot read the token ${tokenFile}: ${e}`);
    return 1;
  }
  const login = `${url.replace(/\/$/, "")}/?token=${token}`;
  console.log(login);
  const display = Deno.env.get("DISPLAY") || Deno.env.get("WAYLAND_DISPLAY");
  if (display && !values["no-open"]) {
    try {
      const opener = new Deno.Command("xdg-open", {
        args: [login],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      await opener.status;
    } catch { /* no xdg-open: the URL is printed */ }
  }
  return 0;
}
