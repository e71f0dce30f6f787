// Package waystation is a small Go client for the Waystation workflow engine.
//
// The generated API lives in package waystationv1; this package adds what every caller needs
// around it: a connection helper, JSON-like data helpers (Value, DecodeValue), step paths
// (Path, PathOf, PathString) and typed errors decoded from the gRPC status details (Error,
// AsError, IsReason, and the ErrXxx reasons that work with errors.Is).
//
//	c, err := waystation.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer c.Close()
//	input, _ := waystation.Value(map[string]any{"document_id": "d-1", "title": "T"})
//	res, err := c.StartRun(ctx, &waystationv1.StartRunRequest{WorkflowId: "document-review", InputData: input})
package waystation

import (
	"context"
	"errors"
	"io"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/waystation/waystation/clients/go/waystationv1"
)

// Client calls the WorkflowService. Every method of the embedded
// waystationv1.WorkflowServiceClient is available on it; an error that a call returns
// (including one from a WatchRun stream) is an *Error, which status.Code and
// status.FromError still understand.
type Client struct {
	waystationv1.WorkflowServiceClient

	conn *grpc.ClientConn // set when Dial made the connection, so Close closes it
}

// Dial connects to a Waystation server at target (for example "127.0.0.1:50051" or
// "dns:///waystation.internal:443"). The connection is made lazily by gRPC.
//
// With no options the connection is plaintext, which suits loopback and in-cluster
// traffic; pass grpc.WithTransportCredentials (and any other option) to choose otherwise.
//
// The connection receives answers of any size, where gRPC's default limit is 4 MiB: the
// server refuses an answer over its own --max-message-bytes with RESPONSE_TOO_LARGE, which
// says more. WithMaxReceiveMessageBytes sets a limit.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	// First, so that a limit among the caller's options wins.
	opts = append([]grpc.DialOption{WithMaxReceiveMessageBytes(math.MaxInt32)}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	c := New(conn)
	c.conn = conn
	return c, nil
}

// WithMaxReceiveMessageBytes is a dial option that limits the size of the answers the
// connection receives (Dial's default: no limit). An answer over it fails with an *Error of
// Reason ErrResponseTooLarge whose Metadata["limit_of"] is "client": the server made the
// answer, so a call that changes a run took effect. It is
// grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n)).
func WithMaxReceiveMessageBytes(n int) grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n))
}

// New returns a Client that uses an existing connection; Close leaves that connection open.
// The connection keeps its own receive limit (gRPC's default: 4 MiB).
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{WorkflowServiceClient: waystationv1.NewWorkflowServiceClient(errorConn{conn})}
}

// Close closes the connection that Dial made; it does nothing for a Client made by New.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// errorConn turns the status errors of every call into *Error, so that callers can use
// errors.Is and errors.As on them without decoding status details themselves.
type errorConn struct{ grpc.ClientConnInterface }

func (c errorConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return wrap(c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...))
}

func (c errorConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, wrap(err)
	}
	return errorStream{s}, nil
}

type errorStream struct{ grpc.ClientStream }

func (s errorStream) SendMsg(m any) error { return wrapStream(s.ClientStream.SendMsg(m)) }
func (s errorStream) RecvMsg(m any) error { return wrapStream(s.ClientStream.RecvMsg(m)) }

// wrapStream keeps io.EOF as it is: it is how a stream says that it ended normally.
func wrapStream(err error) error {
	if errors.Is(err, io.EOF) {
		return err
	}
	return wrap(err)
}

func wrap(err error) error {
	if e, ok := AsError(err); ok {
		return e
	}
	return err
}
