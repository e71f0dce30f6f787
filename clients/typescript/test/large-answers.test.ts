/**
 * Answers larger than gRPC's usual 4 MiB, from a server of the test's own (own-server.ts)
 * whose `--max-message-bytes` is raised to 16 MiB: a client takes them (Connect's
 * `readMaxBytes` is about 4 GiB unless set), and one with a lower `readMaxBytes` says that
 * the call took effect.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import {
  Code,
  ConnectError,
  ResponseTooLargeError,
  RunStatus,
  WaystationError,
  createWaystationClient,
  fromValue,
  toValue,
} from "@waystation/client";

import { OwnServer } from "./own-server.js";
import { rejection } from "./rejection.js";

// About 6 MB: an answer carries it twice (step output and result), under the server's 16 MiB.
const LARGE = 6_000_000;
const CLIENT_LIMIT = 1024 * 1024;

describe("large answers", () => {
  let server: OwnServer;
  before(async () => {
    server = await OwnServer.start("--max-message-bytes", String(16 * 1024 * 1024));
  });
  after(async () => {
    await server.stop();
  });

  test("a client takes an answer over gRPC's usual 4 MiB from a server with more", async () => {
    const client = createWaystationClient(server.address);
    const inputData = toValue({ bytes: LARGE });
    const done = await client.startRun({ workflowId: "inflate", inputData });
    assert.equal(done.status, RunStatus.SUCCESS);
    assert.equal((fromValue(done.result) as { blob: string }).blob.length, LARGE);
  });

  test("an answer over the client's readMaxBytes says so, and the call took effect", async () => {
    const client = createWaystationClient({
      baseUrl: `http://${server.address}`,
      readMaxBytes: CLIENT_LIMIT,
    });
    const runId = `ts-inflate-${randomUUID()}`;
    const inputData = toValue({ bytes: 2 * CLIENT_LIMIT });

    const err = await rejection(client.startRun({ workflowId: "inflate", runId, inputData }));

    assert.ok(err instanceof ResponseTooLargeError, `${err.name}: ${err.message}`);
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.limitOf, "client");
    assert.equal(err.limit, CLIENT_LIMIT);
    assert.ok(err.size !== undefined && err.size > 2 * CLIENT_LIMIT, `size ${err.size}`);
    assert.match(err.message, /receive limit \(readMaxBytes\).*took effect/);
    // It did: the run is listed, finished (a listing carries no result).
    const runs = await client.listRuns({ workflowId: "inflate" });
    assert.deepEqual(
      runs.runs.filter((run) => run.runId === runId).map((run) => run.status),
      [RunStatus.SUCCESS],
    );
    const watched = (async () => {
      for await (const _ of client.watchRun({ runId })) {
        // the settled event is the large one
      }
    })();
    assert.ok((await rejection(watched)) instanceof ResponseTooLargeError);
  });
});

test("Connect's readMaxBytes error becomes a ResponseTooLargeError of the client", () => {
  const connect = "message size 2097393 is larger than configured readMaxBytes 1048576";
  const err = WaystationError.from(new ConnectError(connect, Code.ResourceExhausted));
  assert.ok(err instanceof ResponseTooLargeError);
  assert.deepEqual([err.limitOf, err.size, err.limit], ["client", 2097393, 1048576]);
  assert.equal(err.reason, "RESPONSE_TOO_LARGE");

  const sizeUnknown = "message size is larger than configured readMaxBytes 1048576";
  const unsized = WaystationError.from(new ConnectError(sizeUnknown, Code.ResourceExhausted));
  assert.ok(unsized instanceof ResponseTooLargeError);
  assert.deepEqual([unsized.size, unsized.limit], [undefined, 1048576]);

  // A request over the server's limit did not take effect: it stays a plain refusal.
  const serverSays = "SERVER: Received message larger than max (5000059 vs. 4194304)";
  const refused = WaystationError.from(new ConnectError(serverSays, Code.ResourceExhausted));
  assert.ok(!(refused instanceof ResponseTooLargeError));
  assert.equal(refused.reason, "");
});
