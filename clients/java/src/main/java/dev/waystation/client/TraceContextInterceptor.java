package dev.waystation.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import java.util.Map;
import java.util.function.Supplier;

/**
 * Sends W3C trace context ({@code traceparent}, and {@code tracestate} / {@code baggage} when
 * given) as gRPC metadata on every call, so that the server's run and step spans join the
 * caller's trace; {@code WorkflowResult.getTraceId()} then returns the caller's trace id.
 *
 * <p>The carrier is read once per call. With OpenTelemetry, inject the current context into a
 * map: {@code new TraceContextInterceptor(() -> { var m = new HashMap<String, String>();
 * propagator.inject(Context.current(), m, Map::put); return m; })}.
 */
public final class TraceContextInterceptor implements ClientInterceptor {
  /** The W3C {@code traceparent} header: {@code 00-<32 hex trace id>-<16 hex span id>-01}. */
  public static final Metadata.Key<String> TRACEPARENT =
      Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER);

  private final Supplier<? extends Map<String, String>> carrier;

  /** Sends the entries of the map that {@code carrier} returns for each call. */
  public TraceContextInterceptor(Supplier<? extends Map<String, String>> carrier) {
    this.carrier = carrier;
  }

  /** Sends this fixed {@code traceparent} on every call. */
  public static TraceContextInterceptor traceparent(String traceparent) {
    Map<String, String> headers = Map.of(TRACEPARENT.name(), traceparent);
    return new TraceContextInterceptor(() -> headers);
  }

  @Override
  public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
      MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
    return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
      @Override
      public void start(Listener<RespT> listener, Metadata headers) {
        Map<String, String> entries = carrier.get();
        if (entries != null) {
          entries.forEach(
              (key, value) -> {
                if (value != null && !value.isEmpty()) {
                  headers.put(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER), value);
                }
              });
        }
        super.start(listener, headers);
      }
    };
  }
}
