package waystation_test

// End-to-end tests against a real Waystation server. They never skip: run them through
//
//	scripts/with_server.sh clients/go/test.sh
//
// which starts a server (serving waystation.examples and tests.support.workflows) on a free
// loopback port and exports WAYSTATION_ADDRESS.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/waystation/waystation/clients/go/waystation"
	"github.com/waystation/waystation/clients/go/waystationv1"
)

// dial connects to the server named by WAYSTATION_ADDRESS and fails the test without one.
func dial(t *testing.T, opts ...grpc.DialOption) *waystation.Client {
	t.Helper()
	addr := os.Getenv("WAYSTATION_ADDRESS")
	if addr == "" {
		t.Fatal("WAYSTATION_ADDRESS is not set: these tests need a real server; " +
			"run them as `scripts/with_server.sh clients/go/test.sh` from the repository root")
	}
	return dialAddress(t, addr, opts...)
}

// dialAddress connects to addr; the test's cleanup closes the client.
func dialAddress(t *testing.T, addr string, opts ...grpc.DialOption) *waystation.Client {
	t.Helper()
	c, err := waystation.Dial(addr, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// callCtx bounds every call, so that a hung server fails the test instead of stalling it.
func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func value(t *testing.T, v any) *structpb.Value {
	t.Helper()
	pv, err := waystation.Value(v)
	if err != nil {
		t.Fatalf("Value(%v): %v", v, err)
	}
	return pv
}

// startReview starts document-review and checks that it suspends at review.legal-review.
func startReview(t *testing.T, ctx context.Context, c *waystation.Client) *waystationv1.WorkflowResult {
	t.Helper()
	res, err := c.StartRun(ctx, &waystationv1.StartRunRequest{
		WorkflowId: "document-review",
		InputData:  value(t, map[string]any{"document_id": "d-1", "title": "T", "body": "a b"}),
	})
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if res.GetStatus() != waystationv1.RunStatus_RUN_STATUS_SUSPENDED {
		t.Fatalf("status after start = %v, want SUSPENDED (error: %v)", res.GetStatus(), res.GetError())
	}
	return res
}

func suspendedPaths(res *waystationv1.WorkflowResult) [][]string {
	var paths [][]string
	for _, p := range res.GetSuspended() {
		paths = append(paths, p.GetSegments())
	}
	return paths
}

func TestDocumentReviewSuspendsTwiceAndSucceedsAfterNestedResumes(t *testing.T) {
	c, ctx := dial(t), callCtx(t)
	res := startReview(t, ctx, c)

	if got := suspendedPaths(res); len(got) != 1 || !slices.Equal(got[0], []string{"review", "legal-review"}) {
		t.Fatalf("suspended = %v, want [[review legal-review]]", got)
	}
	var request struct {
		DocumentID   string `json:"document_id"`
		ReviewerRole string `json:"reviewer_role"`
	}
	payload, ok := res.GetSuspendPayload()[waystation.PathString(res.GetSuspended()[0])]
	if !ok {
		t.Fatalf("no suspend payload for review.legal-review in %v", res.GetSuspendPayload())
	}
	if err := waystation.DecodeValue(payload, &request); err != nil {
		t.Fatalf("DecodeValue: %v", err)
	}
	if request.ReviewerRole != "legal" || request.DocumentID != "d-1" {
		t.Fatalf("suspend payload = %+v, want reviewer_role legal for d-1", request)
	}

	res, err := c.ResumeRun(ctx, &waystationv1.ResumeRequest{
		RunId:      res.GetRunId(),
		Step:       waystation.Path("review.legal-review"),
		ResumeData: value(t, map[string]any{"approved": true, "reviewer": "lee"}),
	})
	if err != nil {
		t.Fatalf("ResumeRun legal-review: %v", err)
	}
	if res.GetStatus() != waystationv1.RunStatus_RUN_STATUS_SUSPENDED {
		t.Fatalf("status after legal review = %v, want SUSPENDED", res.GetStatus())
	}
	if got := suspendedPaths(res); len(got) != 1 || !slices.Equal(got[0], []string{"review", "editor-signoff"}) {
		t.Fatalf("suspended = %v, want [[review editor-signoff]]", got)
	}

	res, err = c.ResumeRun(ctx, &waystationv1.ResumeRequest{
		RunId:      res.GetRunId(),
		Step:       waystation.PathOf("review", "editor-signoff"),
		ResumeData: value(t, map[string]any{"signed_off": true, "editor": "ed"}),
	})
	if err != nil {
		t.Fatalf("ResumeRun editor-signoff: %v", err)
	}
	if res.GetStatus() != waystationv1.RunStatus_RUN_STATUS_SUCCESS {
		t.Fatalf("status after sign-off = %v, want SUCCESS (error: %v)", res.GetStatus(), res.GetError())
	}
	var publication struct {
		Published bool     `json:"published"`
		Reviewers []string `json:"reviewers"`
	}
	if err := waystation.DecodeValue(res.GetResult(), &publication); err != nil {
		t.Fatalf("DecodeValue(result): %v", err)
	}
	if !publication.Published || !slices.Equal(publication.Reviewers, []string{"lee", "ed"}) {
		t.Fatalf("result = %+v, want published by [lee ed]", publication)
	}
	if len(res.GetSuspended()) != 0 {
		t.Fatalf("suspended after success = %v, want none", suspendedPaths(res))
	}
}

func TestResumeWithInvalidDataIsInvalidArgumentWithFieldViolations(t *testing.T) {
	c, ctx := dial(t), callCtx(t)
	started := startReview(t, ctx, c)

	_, err := c.ResumeRun(ctx, &waystationv1.ResumeRequest{
		RunId:      started.GetRunId(),
		Step:       waystation.Path("review.legal-review"),
		ResumeData: value(t, map[string]any{"approved": "nope"}),
	})
	if err == nil {
		t.Fatal("ResumeRun with invalid data succeeded, want InvalidArgument")
	}
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("status.Code = %v, want InvalidArgument (%v)", got, err)
	}
	e, ok := waystation.AsError(err)
	if !ok {
		t.Fatalf("AsError(%v) = false", err)
	}
	if e.Reason != waystation.ErrInvalidResumeData || !errors.Is(err, waystation.ErrInvalidResumeData) ||
		!waystation.IsReason(err, "INVALID_RESUME_DATA") {
		t.Fatalf("reason = %q, want INVALID_RESUME_DATA", e.Reason)
	}
	if errors.Is(err, waystation.ErrRunNotFound) {
		t.Fatal("errors.Is matched RUN_NOT_FOUND on an INVALID_RESUME_DATA error")
	}
	if e.Metadata["run_id"] != started.GetRunId() {
		t.Errorf("metadata = %v, want run_id %s", e.Metadata, started.GetRunId())
	}
	for _, field := range []string{"resume_data.approved", "resume_data.reviewer"} {
		if _, ok := e.Violation(field); !ok {
			t.Errorf("no field violation for %s in %+v", field, e.FieldViolations)
		}
	}

	run, err := c.GetRun(ctx, &waystationv1.GetRunRequest{RunId: started.GetRunId()})
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	if run.GetStatus() != waystationv1.RunStatus_RUN_STATUS_SUSPENDED {
		t.Fatalf("status after a refused resume = %v, want still SUSPENDED", run.GetStatus())
	}
}

func TestResumeOfUnknownStepListsTheSuspendedPaths(t *testing.T) {
	c, ctx := dial(t), callCtx(t)
	started := startReview(t, ctx, c)

	_, err := c.ResumeRun(ctx, &waystationv1.ResumeRequest{
		RunId:      started.GetRunId(),
		Step:       waystation.Path("review.no-such-step"),
		ResumeData: value(t, map[string]any{"approved": true, "reviewer": "lee"}),
	})
	e, ok := waystation.AsError(err)
	if !ok || e.Code != codes.FailedPrecondition || !errors.Is(err, waystation.ErrStepNotSuspended) {
		t.Fatalf("err = %v, want FailedPrecondition STEP_NOT_SUSPENDED", err)
	}
	if len(e.Suspended) != 1 || waystation.PathString(e.Suspended[0]) != "review.legal-review" {
		t.Fatalf("Suspended detail = %v, want [review.legal-review]", e.Suspended)
	}
}

func TestAnswerOverTheMessageLimitIsResponseTooLarge(t *testing.T) {
	c, ctx := dial(t), callCtx(t)
	// inflate's result is `bytes` characters: more than the server's default 4 MiB limit,
	// which with_server.sh keeps.
	_, err := c.StartRun(ctx, &waystationv1.StartRunRequest{
		WorkflowId: "inflate",
		InputData:  value(t, map[string]any{"bytes": 4<<20 + 100_000}),
	})
	e, ok := waystation.AsError(err)
	if !ok || e.Code != codes.ResourceExhausted || !errors.Is(err, waystation.ErrResponseTooLarge) {
		t.Fatalf("err = %v, want ResourceExhausted RESPONSE_TOO_LARGE", err)
	}
	if want := fmt.Sprintf("waystation: ResourceExhausted (RESPONSE_TOO_LARGE): %s", e.Message); err.Error() != want {
		t.Errorf("err.Error() = %q, want %q", err.Error(), want)
	}
	size, errSize := strconv.Atoi(e.Metadata["size"])
	limit, errLimit := strconv.Atoi(e.Metadata["limit"])
	if errSize != nil || errLimit != nil || size <= limit {
		t.Errorf("metadata = %v, want a size above the limit", e.Metadata)
	}
	// The run took effect: it is listed (a listing carries no result).
	runs, err := c.ListRuns(ctx, &waystationv1.ListRunsRequest{WorkflowId: "inflate"})
	if err != nil {
		t.Fatalf("ListRuns: %v", err)
	}
	if !slices.ContainsFunc(runs.GetRuns(), func(r *waystationv1.Run) bool { return r.GetRunId() == e.Metadata["run_id"] }) {
		t.Errorf("run %q is not listed", e.Metadata["run_id"])
	}
}

func TestDialTakesAnAnswerOverGRPCsDefaultLimitWhenTheServersIsRaised(t *testing.T) {
	c := dialAddress(t, startOwnServer(t, "--max-message-bytes", strconv.Itoa(16<<20)))
	// About 6 MB: the answer carries it twice (step output and result), more than gRPC's
	// default 4 MiB and less than the server's 16 MiB.
	const large = 6_000_000
	res, err := c.StartRun(callCtx(t), &waystationv1.StartRunRequest{
		WorkflowId: "inflate",
		InputData:  value(t, map[string]any{"bytes": large}),
	})
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	var result struct{ Blob string }
	if err := waystation.DecodeValue(res.GetResult(), &result); err != nil || len(result.Blob) != large {
		t.Fatalf("result blob of %d bytes (%v), want %d", len(result.Blob), err, large)
	}
}

func TestAnAnswerOverTheClientsOwnLimitIsResponseTooLargeAndTookEffect(t *testing.T) {
	const limit = 1 << 20
	c := dial(t, grpc.WithTransportCredentials(insecure.NewCredentials()), waystation.WithMaxReceiveMessageBytes(limit))
	ctx, runID := callCtx(t), "go-inflate-"+randomHex(t, 8)
	_, err := c.StartRun(ctx, &waystationv1.StartRunRequest{
		WorkflowId: "inflate",
		RunId:      runID,
		InputData:  value(t, map[string]any{"bytes": limit}), // twice that in the answer, under the server's 4 MiB
	})
	e, ok := waystation.AsError(err)
	if !ok || e.Code != codes.ResourceExhausted || !errors.Is(err, waystation.ErrResponseTooLarge) {
		t.Fatalf("err = %v, want ResourceExhausted RESPONSE_TOO_LARGE", err)
	}
	if e.Metadata["limit_of"] != "client" || e.Metadata["limit"] != strconv.Itoa(limit) {
		t.Errorf("metadata = %v, want the client's limit %d", e.Metadata, limit)
	}
	if !strings.Contains(e.Message, "took effect") {
		t.Errorf("message %q does not say that the call took effect", e.Message)
	}
	// It did: the run is listed, finished (a listing carries no result).
	runs, err := c.ListRuns(ctx, &waystationv1.ListRunsRequest{WorkflowId: "inflate"})
	if err != nil {
		t.Fatalf("ListRuns: %v", err)
	}
	if !slices.ContainsFunc(runs.GetRuns(), func(r *waystationv1.Run) bool {
		return r.GetRunId() == runID && r.GetStatus() == waystationv1.RunStatus_RUN_STATUS_SUCCESS
	}) {
		t.Errorf("run %s is not listed as SUCCESS", runID)
	}
}

func TestTraceparentInMetadataComesBackAsTraceID(t *testing.T) {
	c := dial(t)
	traceID, spanID := randomHex(t, 16), randomHex(t, 8)
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "traceparent", "00-"+traceID+"-"+spanID+"-01")

	res, err := c.StartRun(ctx, &waystationv1.StartRunRequest{
		WorkflowId: "document-review",
		InputData:  value(t, map[string]any{"document_id": "d-1", "title": "T", "body": "a b"}),
	})
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if res.GetTraceId() != traceID {
		t.Fatalf("trace_id = %q, want the traceparent's %q", res.GetTraceId(), traceID)
	}
}

func TestDeadlineThatExpiresIsReportedAsDeadlineExceeded(t *testing.T) {
	c := dial(t)
	log := filepath.Join(t.TempDir(), "slow.log")
	runID := "go-deadline-" + randomHex(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()

	began := time.Now()
	_, err := c.StartRun(ctx, &waystationv1.StartRunRequest{
		WorkflowId: "slow",
		RunId:      runID,
		InputData:  value(t, map[string]any{"log": log, "seconds": 2}),
	})
	if got := status.Code(err); got != codes.DeadlineExceeded {
		t.Fatalf("status.Code = %v, want DeadlineExceeded (%v)", got, err)
	}
	if e, ok := waystation.AsError(err); !ok || e.Code != codes.DeadlineExceeded {
		t.Fatalf("AsError(%v) = %+v, %v; want Code DeadlineExceeded", err, e, ok)
	}
	if elapsed := time.Since(began); elapsed > 1500*time.Millisecond {
		t.Fatalf("the call returned after %v, want about 300ms", elapsed)
	}

	// The run was accepted and goes on without the caller; wait until it settles so that
	// it does not write to the temporary directory after the test removed it.
	settled := waitSettled(t, c, runID)
	if settled != waystationv1.RunStatus_RUN_STATUS_SUCCESS {
		t.Fatalf("the run settled as %v, want SUCCESS", settled)
	}
	if b, err := os.ReadFile(log); err != nil || strings.TrimSpace(string(b)) != "slow" {
		t.Fatalf("log = %q (%v), want the slow step to have run once", b, err)
	}
}

// waitSettled polls GetRun until the run leaves PENDING and RUNNING, for at most 15 seconds.
func waitSettled(t *testing.T, c *waystation.Client, runID string) waystationv1.RunStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		run, err := c.GetRun(callCtx(t), &waystationv1.GetRunRequest{RunId: runID})
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("GetRun: %v", err)
		}
		switch s := run.GetStatus(); s {
		case waystationv1.RunStatus_RUN_STATUS_UNSPECIFIED,
			waystationv1.RunStatus_RUN_STATUS_PENDING,
			waystationv1.RunStatus_RUN_STATUS_RUNNING:
		default:
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s did not settle within 15s (status %v)", runID, run.GetStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestADrainEndsAWatchAtOnceNamingTheSequenceToWatchAgainAfter(t *testing.T) {
	addr, stop := startOwnServerToStop(t)
	c, ctx := dialAddress(t, addr), callCtx(t)
	res := startReview(t, ctx, c)
	stream, err := c.WatchRun(ctx, &waystationv1.WatchRunRequest{RunId: res.GetRunId()})
	if err != nil {
		t.Fatalf("WatchRun: %v", err)
	}
	var last *waystationv1.RunEvent
	for last.GetType() != waystationv1.RunEventType_RUN_EVENT_TYPE_RUN_SETTLED {
		if last, err = stream.Recv(); err != nil { // SUSPENDED: the stream stays open after it
			t.Fatalf("Recv: %v", err)
		}
	}

	began, stopped := time.Now(), make(chan struct{})
	go func() { stop(); close(stopped) }() // SIGTERM: the drain, as in a rollout
	_, err = stream.Recv()
	took := time.Since(began)
	<-stopped

	e, ok := waystation.AsError(err)
	if !ok || e.Code != codes.Unavailable || !errors.Is(err, waystation.ErrServerDraining) {
		t.Fatalf("err = %v, want Unavailable SERVER_DRAINING", err)
	}
	want := map[string]string{"run_id": res.GetRunId(), "after_sequence": strconv.FormatInt(last.GetSequence(), 10)}
	if fmt.Sprint(e.Metadata) != fmt.Sprint(want) {
		t.Errorf("metadata = %v, want %v", e.Metadata, want)
	}
	if took > 5*time.Second {
		t.Errorf("the watch ended %v after SIGTERM, want at once (not after the grace)", took)
	}
}
