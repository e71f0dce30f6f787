/**
 * A real Waystation server of a test's own, for what the shared one at WAYSTATION_ADDRESS must
 * not be put through (a SIGKILL) or does not have (a raised `--max-message-bytes`). It is
 * started as scripts/with_server.sh starts that one: the Python in $PYTHON, else the
 * repository's .venv, with the repository on PYTHONPATH, serving the example and test
 * workflows from a fresh SQLite file.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Code, WaystationError, createWaystationClient } from "@waystation/client";

// dist-test/own-server.js -> the repository root, three levels up.
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export class OwnServer {
  private constructor(
    readonly address: string,
    readonly dir: string,
    private readonly process: ChildProcess,
  ) {}

  /** Starts a server with `options` and resolves once it answers calls. */
  static async start(...options: string[]): Promise<OwnServer> {
    const dir = mkdtempSync(join(tmpdir(), "waystation-ts-"));
    const address = `127.0.0.1:${await freePort()}`;
    const python = process.env["PYTHON"] || join(repo, ".venv/bin/python");
    const args = ["-m", "waystation.cli", "serve", "--listen", address];
    args.push("--db", `sqlite:///${join(dir, "ws.db")}`);
    args.push("--workflows", "waystation.examples", "--workflows", "tests.support.workflows");
    const log = openSync(join(dir, "server.log"), "w");
    const child = spawn(python, [...args, ...options], {
      cwd: repo,
      env: { ...process.env, PYTHONPATH: repo },
      stdio: ["ignore", log, log],
    });
    const server = new OwnServer(address, dir, child);
    await server.awaitServing();
    return server;
  }

  private async awaitServing(): Promise<void> {
    const client = createWaystationClient(this.address);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.process.exitCode !== null) throw new Error(`the server exited:\n${this.log()}`);
      try {
        await client.listWorkflows({}, { timeoutMs: 1_000 });
        return;
      } catch (err) {
        const waiting = [Code.Unavailable, Code.DeadlineExceeded];
        if (!(err instanceof WaystationError && waiting.includes(err.code))) throw err;
      }
      if (Date.now() > deadline) throw new Error(`no answer within 20 s:\n${this.log()}`);
      await new Promise((done) => setTimeout(done, 100));
    }
  }

  log(): string {
    return readFileSync(join(this.dir, "server.log"), "utf8");
  }

  /** SIGKILL: the process dies at once, its connections with it. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** SIGTERM, as with_server.sh stops its server; removes the server's files. */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise((done) => this.process.once("exit", done));
    this.process.kill(signal);
    await exited;
  }
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}
