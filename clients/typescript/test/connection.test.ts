/**
 * Lost connections: a server process SIGKILLed under a call and a watch (a server of the test's
 * own, see own-server.ts), and a call that its caller aborts (the shared server at
 * WAYSTATION_ADDRESS). The first is UNAVAILABLE, as in the other clients, so that retry logic
 * sees it; only the second is Canceled. A server that drains (SIGTERM, as in a rollout) ends a
 * watch at once with a ServerDrainingError that names the sequence to watch again after. And a
 * watch left early is cancelled, not left open.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { describe, test } from "node:test";

import {
  Code,
  RunEventType,
  RunStatus,
  ServerDrainingError,
  UnavailableError,
  createWaystationClient,
  toValue,
  type RunEvent,
  type WaystationClient,
} from "@waystation/client";

import { OwnServer } from "./own-server.js";
import { rejection } from "./rejection.js";

const DOCUMENT = { document_id: "d-1", title: "T", body: "a b" };

/**
 * A watch of a suspended run, read up to its RUN_SETTLED event (`settled`): the stream stays
 * open.
 */
async function openWatch(
  client: WaystationClient,
  signal?: AbortSignal,
): Promise<{ events: AsyncIterator<RunEvent>; settled: RunEvent }> {
  const started = await client.startRun({
    workflowId: "document-review",
    inputData: toValue(DOCUMENT),
  });
  assert.equal(started.status, RunStatus.SUSPENDED);
  const events = client.watchRun({ runId: started.runId }, { signal })[Symbol.asyncIterator]();
  for (;;) {
    const { done, value } = await events.next();
    assert.ok(!done, "the watch of a suspended run ended");
    if (value.type === RunEventType.RUN_SETTLED) return { events, settled: value };
  }
}

async function waitForStatus(client: WaystationClient, runId: string, status: RunStatus) {
  for (let i = 0; i < 200; i++) {
    const run = await client.getRun({ runId }).catch(() => undefined);
    if (run?.status === status) return;
    await new Promise((done) => setTimeout(done, 50));
  }
  assert.fail(`run ${runId} never reached ${RunStatus[status]}`);
}

describe("a lost connection", () => {
  test("a server killed mid-watch and mid-call fails both with UnavailableError", async () => {
    const server = await OwnServer.start();
    try {
      const client = createWaystationClient(server.address);
      const { events: watch } = await openWatch(client);
      const runId = `slow-${randomUUID()}`;
      const log = join(server.dir, "slow.log");
      const call = rejection(
        client.startRun({ workflowId: "slow", runId, inputData: toValue({ log, seconds: 30 }) }),
      );
      await waitForStatus(client, runId, RunStatus.RUNNING);

      await server.kill();

      for (const err of [await rejection(watch.next()), await call]) {
        assert.ok(err instanceof UnavailableError, `${err.name} ${Code[err.code]}: ${err.message}`);
        assert.equal(err.code, Code.Unavailable);
      }
    } finally {
      await server.stop();
    }
  });

  test("a draining server ends a watch at once, naming the sequence to go on after", async () => {
    const server = await OwnServer.start();
    try {
      const { events, settled } = await openWatch(createWaystationClient(server.address));
      const began = Date.now();
      const stopped = server.stop(); // SIGTERM: the drain, as in a rollout

      const err = await rejection(events.next());
      const what = `${err.name} ${Code[err.code]}: ${err.message}`;
      assert.ok(err instanceof ServerDrainingError, what);
      assert.ok(err instanceof UnavailableError);
      assert.ok(Date.now() - began < 5_000, "not at once: the drain waited for the watch");
      assert.equal(err.runId, settled.runId);
      assert.equal(err.afterSequence, settled.sequence);
      await stopped;
    } finally {
      await server.stop();
    }
  });

  test("leaving a watch's loop early cancels its call", async () => {
    const address = process.env["WAYSTATION_ADDRESS"];
    assert.ok(address, "WAYSTATION_ADDRESS is not set: run via scripts/with_server.sh");
    const signals: AbortSignal[] = []; // what Connect cancels a call by, one per call
    const client = createWaystationClient({
      baseUrl: `http://${address}`,
      interceptors: [(next) => (req) => (signals.push(req.signal), next(req))],
    });
    const started = await client.startRun({
      workflowId: "document-review",
      inputData: toValue(DOCUMENT),
    });
    signals.length = 0;
    const cleanup = new AbortController(); // so that a failure leaves no call open

    try {
      const options = { signal: cleanup.signal };
      for await (const event of client.watchRun({ runId: started.runId }, options)) {
        if (event.type === RunEventType.RUN_SETTLED) break; // SUSPENDED: the stream stays open
      }
      assert.equal(signals.length, 1);
      assert.ok(signals[0]!.aborted, "the watch's call is still open");
    } finally {
      cleanup.abort();
    }
  });

  test("a watch that its caller aborts is Canceled, not UnavailableError", async () => {
    const address = process.env["WAYSTATION_ADDRESS"];
    assert.ok(address, "WAYSTATION_ADDRESS is not set: run via scripts/with_server.sh");
    const controller = new AbortController();
    const { events: watch } = await openWatch(createWaystationClient(address), controller.signal);

    controller.abort();

    const err = await rejection(watch.next());
    assert.equal(err.code, Code.Canceled);
    assert.ok(!(err instanceof UnavailableError));
  });
});
