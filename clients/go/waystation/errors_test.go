package waystation_test

import (
	"errors"
	"fmt"
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
