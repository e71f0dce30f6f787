package waystation_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waystation/waystation/clients/go/waystation"
	"github.com/waystation/waystation/clients/go/waystationv1"
)

func richStatus(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.FailedPrecondition, "step x is not suspended").WithDetails(
		&errdetails.ErrorInfo{Reason: "STEP_NOT_SUSPENDED", Domain: "waystation.dev", Metadata: map[string]string{"run_id": "r-1"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "step", Description: "no such step"}}},
		&waystationv1.SuspendedStepsDetail{Suspended: []*waystationv1.StepPath{waystation.Path("review.legal-review")}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestAsErrorDecodesEveryStatusDetail(t *testing.T) {
	e, ok := waystation.AsError(richStatus(t))
	if !ok {
		t.Fatal("AsError = false for a status error")
	}
	if e.Code != codes.FailedPrecondition || e.Message != "step x is not suspended" {
		t.Errorf("code, message = %v, %q", e.Code, e.Message)
	}
	if e.Reason != waystation.ErrStepNotSuspended || e.Domain != "waystation.dev" || e.Metadata["run_id"] != "r-1" {
		t.Errorf("error info = %q %q %v", e.Reason, e.Domain, e.Metadata)
	}
	if d, ok := e.Violation("step"); !ok || d != "no such step" {
		t.Errorf("violations = %+v", e.FieldViolations)
	}
	if len(e.Suspended) != 1 || waystation.PathString(e.Suspended[0]) != "review.legal-review" {
		t.Errorf("suspended = %v", e.Suspended)
	}
}

func TestDecodedErrorsWorkWithErrorsIsAndStatusCode(t *testing.T) {
	e, _ := waystation.AsError(richStatus(t))
	wrapped := fmt.Errorf("resuming: %w", e)
	if !errors.Is(wrapped, waystation.ErrStepNotSuspended) || errors.Is(wrapped, waystation.ErrRunNotFound) {
		t.Error("errors.Is does not follow the reason")
	}
	if !waystation.IsReason(wrapped, waystation.ErrStepNotSuspended) || !waystation.IsReason(richStatus(t), "STEP_NOT_SUSPENDED") {
		t.Error("IsReason does not follow the reason")
	}
	if status.Code(wrapped) != codes.FailedPrecondition {
		t.Errorf("status.Code(wrapped) = %v", status.Code(wrapped))
	}
	if again, ok := waystation.AsError(wrapped); !ok || again != e {
		t.Error("AsError of a wrapped *Error does not return it")
	}
}

func TestAsErrorRefusesErrorsWithoutStatus(t *testing.T) {
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.OK, "")} {
		if e, ok := waystation.AsError(err); ok {
			t.Errorf("AsError(%v) = %v, true", err, e)
		}
	}
	if e, ok := waystation.AsError(status.Error(codes.Unavailable, "down")); !ok || e.Reason != "" || e.Code != codes.Unavailable {
		t.Errorf("a status without details = %+v, %v", e, ok)
	}
}

func TestErrorTextNamesTheCodeAndTheBareReasonOnce(t *testing.T) {
	e, _ := waystation.AsError(richStatus(t))
	want := "waystation: FailedPrecondition (STEP_NOT_SUSPENDED): step x is not suspended"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := fmt.Errorf("resuming: %w", e).Error(); got != "resuming: "+want {
		t.Errorf("wrapped = %q", got)
	}
	for _, got := range []string{
		fmt.Sprint(e.Reason), fmt.Sprintf("%v", e.Reason), fmt.Sprintf("%s", e.Reason),
		e.Reason.Error(), fmt.Sprint(waystation.ErrStepNotSuspended),
	} {
		if got != "STEP_NOT_SUSPENDED" {
			t.Errorf("a Reason prints as %q, want STEP_NOT_SUSPENDED", got)
		}
	}
	bare, _ := waystation.AsError(status.Error(codes.Unavailable, "down"))
	if got := bare.Error(); got != "waystation: Unavailable: down" {
		t.Errorf("Error() without a reason = %q", got)
	}
}

// Every reason of the server's table (docs/api.md), its constant and its status code.
var serverReasons = []struct {
	name   string
	reason waystation.Reason
	code   codes.Code
}{
	{"RUN_NOT_FOUND", waystation.ErrRunNotFound, codes.NotFound},
	{"WORKFLOW_NOT_FOUND", waystation.ErrWorkflowNotFound, codes.NotFound},
	{"RUN_ALREADY_EXISTS", waystation.ErrRunAlreadyExists, codes.AlreadyExists},
	{"RUN_NOT_SUSPENDED", waystation.ErrRunNotSuspended, codes.FailedPrecondition},
	{"STEP_NOT_SUSPENDED", waystation.ErrStepNotSuspended, codes.FailedPrecondition},
	{"STEP_AMBIGUOUS", waystation.ErrStepAmbiguous, codes.FailedPrecondition},
	{"LABEL_NOT_FOUND", waystation.ErrLabelNotFound, codes.FailedPrecondition},
	{"FOREACH_INDEX_NOT_SUSPENDED", waystation.ErrForeachIndexNotSuspended, codes.FailedPrecondition},
	{"RUN_NOT_ACTIVE", waystation.ErrRunNotActive, codes.FailedPrecondition},
	{"RUN_ACTIVE", waystation.ErrRunActive, codes.FailedPrecondition},
	{"EARLIER_STEP_SUSPENDED", waystation.ErrEarlierStepSuspended, codes.FailedPrecondition},
	{"WORKFLOW_CHANGED", waystation.ErrWorkflowChanged, codes.FailedPrecondition},
	{"INVALID_RESUME_DATA", waystation.ErrInvalidResumeData, codes.InvalidArgument},
	{"INVALID_INPUT", waystation.ErrInvalidInput, codes.InvalidArgument},
	{"INVALID_ARGUMENT", waystation.ErrInvalidArgument, codes.InvalidArgument},
	{"RESUME_CONFLICT", waystation.ErrResumeConflict, codes.Aborted},
	{"VERSION_MISMATCH", waystation.ErrVersionMismatch, codes.Aborted},
	{"RUN_CHANGED", waystation.ErrRunChanged, codes.Aborted},
	{"RESPONSE_TOO_LARGE", waystation.ErrResponseTooLarge, codes.ResourceExhausted},
	{"STORE_UNAVAILABLE", waystation.ErrStoreUnavailable, codes.Unavailable},
	{"SERVER_DRAINING", waystation.ErrServerDraining, codes.Unavailable},
	{"UNAUTHENTICATED", waystation.ErrUnauthenticated, codes.Unauthenticated},
	{"PERMISSION_DENIED", waystation.ErrPermissionDenied, codes.PermissionDenied},
	{"INTERNAL", waystation.ErrInternal, codes.Internal},
}

func TestEveryServerReasonHasAConstantThatErrorsIsMatches(t *testing.T) {
	for _, r := range serverReasons {
		if string(r.reason) != r.name {
			t.Errorf("the constant for %s is %q", r.name, string(r.reason))
		}
		st, err := status.New(r.code, "refused").WithDetails(
			&errdetails.ErrorInfo{Reason: r.name, Domain: "waystation.dev"})
		if err != nil {
			t.Fatal(err)
		}
		wrapped := fmt.Errorf("call: %w", st.Err())
		e, _ := waystation.AsError(wrapped)
		if e == nil || e.Code != r.code || !errors.Is(e, r.reason) || !waystation.IsReason(wrapped, r.reason) {
			t.Errorf("%s: decoded as %+v", r.name, e)
		}
	}
}

func TestAnAnswerOverTheClientsReceiveLimitIsResponseTooLargeOfTheClient(t *testing.T) {
	grpcSays := status.Error(codes.ResourceExhausted, "grpc: received message larger than max (10000262 vs. 4194304)")
	e, ok := waystation.AsError(grpcSays)
	if !ok || !errors.Is(e, waystation.ErrResponseTooLarge) || status.Code(e) != codes.ResourceExhausted {
		t.Fatalf("AsError = %v, %v; want ResourceExhausted RESPONSE_TOO_LARGE", e, ok)
	}
	want := map[string]string{"size": "10000262", "limit": "4194304", "limit_of": "client"}
	if fmt.Sprint(e.Metadata) != fmt.Sprint(want) || e.Domain != "waystation.dev" {
		t.Errorf("metadata = %v (domain %q), want %v", e.Metadata, e.Domain, want)
	}
	for _, says := range []string{"4194304-byte receive limit (WithMaxReceiveMessageBytes)", "took effect"} {
		if !strings.Contains(e.Message, says) {
			t.Errorf("message %q does not say %q", e.Message, says)
		}
	}
	if again, _ := waystation.AsError(e.GRPCStatus().Err()); again.Reason != waystation.ErrResponseTooLarge {
		t.Errorf("GRPCStatus() lost the reason: %v", again)
	}
}

func TestARequestOverTheServersLimitStaysAPlainResourceExhausted(t *testing.T) {
	// It did not take effect: the server refused it before any handler ran.
	serverSays := "SERVER: Received message larger than max (5000059 vs. 4194304)"
	e, _ := waystation.AsError(status.Error(codes.ResourceExhausted, serverSays))
	if e.Reason != "" || e.Message != serverSays {
		t.Errorf("AsError = %v, want the status as it came", e)
	}
}
