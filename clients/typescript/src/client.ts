/**
 * `createWaystationClient`: a Connect client for `waystation.v1.WorkflowService` over
 * HTTP/2 gRPC (`@connectrpc/connect-node`'s `createGrpcTransport`), whose calls throw
 * `WaystationError`s instead of bare `ConnectError`s.
 *
 * Per-call options are Connect's own: `{ timeoutMs }` sets the gRPC deadline,
 * `{ headers: { traceparent } }` continues the caller's trace into the workflow,
 * `{ signal }` cancels. Only a call that its signal cancelled fails with Code.Canceled: one
 * that lost the server (its process died, the connection broke) is an UnavailableError.
 * Leaving a `for await` loop over `watchRun` early cancels the watch too.
 */

import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { WaystationError } from "./errors.js";
import { WorkflowService } from "./gen/waystation/v1/service_pb.js";

/** The Connect client for WorkflowService: `startRun`, `resumeRun`, `getRun`, `watchRun`, ... */
export type WaystationClient = Client<typeof WorkflowService>;

/**
 * Options of `createWaystationClient`: those of Connect's gRPC transport (`baseUrl`,
 * `interceptors`, `defaultTimeoutMs`, `nodeOptions` for TLS, ...), or a ready transport.
 */
export type WaystationClientOptions = GrpcTransportOptions | { transport: Transport };

/**
 * A client for the server at `target`: "host:port" (plain-text HTTP/2, as
 * `waystation serve` listens), a URL ("http://host:port", "https://host"), or options.
 */
export function createWaystationClient(target: string | WaystationClientOptions): WaystationClient {
  return withTypedErrors(createClient(WorkflowService, toTransport(target)));
}

function toTransport(target: string | WaystationClientOptions): Transport {
  if (typeof target === "string") return createGrpcTransport({ baseUrl: baseUrl(target) });
  if ("transport" in target) return target.transport;
  return createGrpcTransport({ ...target, baseUrl: baseUrl(target.baseUrl) });
}

function baseUrl(address: string): string {
  return address.includes("://") ? address : `http://${address}`;
}

type AnyCall = (request: unknown, options?: CallOptions) => unknown;

/** Wraps each method so that whatever it throws (or its stream throws) is a WaystationError. */
function withTypedErrors(raw: WaystationClient): WaystationClient {
  const calls = raw as unknown as Record<string, AnyCall>;
  const wrapped: Record<string, AnyCall> = {};
  for (const method of WorkflowService.methods) {
    const call = calls[method.localName]!;
    wrapped[method.localName] =
      method.methodKind === "unary"
        ? async (request, options) => {
            try {
              return await call(request, options);
            } catch (err) {
              throw typedError(err, options);
            }
          }
        : async function* (request, options) {
            // Connect's stream cannot be stopped but by its signal (its iterator has no
            // `return`): leaving the loop early would leave the call open, maybe for days.
            const stop = new AbortController();
            const caller = options?.signal;
            const follow = () => stop.abort(caller?.reason);
            if (caller?.aborted) follow();
            caller?.addEventListener("abort", follow, { once: true });
            try {
              yield* call(request, { ...options, signal: stop.signal }) as AsyncIterable<unknown>;
            } catch (err) {
              throw typedError(err, options);
            } finally {
              caller?.removeEventListener("abort", follow);
              stop.abort(); // the caller left the loop (or it ended, and this does nothing)
            }
          };
  }
  return wrapped as unknown as WaystationClient;
}

/**
 * The WaystationError for what a call threw. Connect reports a stream that the server's side
 * reset with CANCEL (a server process that died, a connection that broke) as Canceled, just as
 * it reports the caller's own cancel. A Canceled call whose signal did not fire, and that no
 * grpc-status trailer ended, was not cancelled by its caller: it lost the server, which gRPC
 * and the other Waystation clients call UNAVAILABLE, so that retry logic sees it as such.
 */
function typedError(err: unknown, options: CallOptions | undefined): WaystationError {
  const cause = ConnectError.from(err);
  const byCaller = options?.signal?.aborted === true;
  if (cause.code !== Code.Canceled || byCaller || cause.metadata.has("grpc-status")) {
    return WaystationError.from(cause);
  }
  const message = `the call lost the server (${cause.rawMessage})`;
  const lost = new ConnectError(message, Code.Unavailable, cause.metadata, undefined, cause);
  lost.details = cause.details;
  return WaystationError.from(lost);
}
