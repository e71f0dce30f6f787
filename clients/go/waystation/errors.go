package waystation

import (
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waystation/waystation/clients/go/waystationv1"
)

// Reason is the stable reason of a refused call, from the google.rpc.ErrorInfo that the server
// attaches to every error it returns on purpose. A Reason is itself an error, so that
//
//	errors.Is(err, waystation.ErrInvalidResumeData)
//
// is true for any *Error with that reason. It prints as the bare reason ("RUN_NOT_FOUND").
type Reason string

// Error makes a Reason usable as an errors.Is target. Its text is the bare reason, so that
// a Reason prints the same with %v, %s and Print, and an *Error's text names it once.
func (r Reason) Error() string { return string(r) }

// The reasons the server uses (the table in docs/api.md), with the status code of each.
const (
	ErrRunNotFound              Reason = "RUN_NOT_FOUND"               // NotFound
	ErrWorkflowNotFound         Reason = "WORKFLOW_NOT_FOUND"          // NotFound
	ErrRunAlreadyExists         Reason = "RUN_ALREADY_EXISTS"          // AlreadyExists
	ErrRunNotSuspended          Reason = "RUN_NOT_SUSPENDED"           // FailedPrecondition
	ErrStepNotSuspended         Reason = "STEP_NOT_SUSPENDED"          // FailedPrecondition; Error.Suspended lists the paths
	ErrStepAmbiguous            Reason = "STEP_AMBIGUOUS"              // FailedPrecondition; Error.Suspended lists the paths
	ErrLabelNotFound            Reason = "LABEL_NOT_FOUND"             // FailedPrecondition; Error.Suspended lists the paths
	ErrForeachIndexNotSuspended Reason = "FOREACH_INDEX_NOT_SUSPENDED" // FailedPrecondition; Error.Suspended lists the paths
	ErrRunNotActive             Reason = "RUN_NOT_ACTIVE"              // FailedPrecondition
	ErrRunActive                Reason = "RUN_ACTIVE"                  // FailedPrecondition
	ErrEarlierStepSuspended     Reason = "EARLIER_STEP_SUSPENDED"      // FailedPrecondition; Error.Metadata has run_id, step_path and suspended_step_path
	ErrWorkflowChanged          Reason = "WORKFLOW_CHANGED"            // FailedPrecondition; Error.Metadata has run_id, workflow_id and step_path
	ErrInvalidResumeData        Reason = "INVALID_RESUME_DATA"         // InvalidArgument; Error.FieldViolations
	ErrInvalidInput             Reason = "INVALID_INPUT"               // InvalidArgument; Error.FieldViolations
	ErrInvalidArgument          Reason = "INVALID_ARGUMENT"            // InvalidArgument; Error.FieldViolations
	ErrResumeConflict           Reason = "RESUME_CONFLICT"             // Aborted
	ErrVersionMismatch          Reason = "VERSION_MISMATCH"            // Aborted
	ErrRunChanged               Reason = "RUN_CHANGED"                 // Aborted
	ErrResponseTooLarge         Reason = "RESPONSE_TOO_LARGE"          // ResourceExhausted; Error.Metadata has run_id, size, limit (and limit_of "client" when this client's limit refused it)
	ErrStoreUnavailable         Reason = "STORE_UNAVAILABLE"           // Unavailable; retry with the same request_id
	ErrServerDraining           Reason = "SERVER_DRAINING"             // Unavailable; a draining server ended a WatchRun: watch again with Error.Metadata["after_sequence"]
	ErrUnauthenticated          Reason = "UNAUTHENTICATED"             // Unauthenticated
	ErrPermissionDenied         Reason = "PERMISSION_DENIED"           // PermissionDenied
	ErrInternal                 Reason = "INTERNAL"                    // Internal; the server log has the details
)

// FieldViolation is one problem with one field of a request, from a google.rpc.BadRequest.
// Field is a dotted path such as "resume_data.approved".
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed call with its status details decoded. Reason, Metadata and Domain come
// from the google.rpc.ErrorInfo, FieldViolations from a google.rpc.BadRequest, Suspended and
// ResumeLabels from a waystationv1.SuspendedStepsDetail; each is empty when the status did
// not carry that detail (a deadline or a connection failure carries none).
type Error struct {
	Code            codes.Code
	Message         string
	Reason          Reason
	Domain          string
	Metadata        map[string]string
	FieldViolations []FieldViolation
	Suspended       []*waystationv1.StepPath
	ResumeLabels    map[string]*waystationv1.ResumeLabel

	status *status.Status
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("waystation: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("waystation: %s (%s): %s", e.Code, e.Reason, e.Message)
}

// Is reports whether target is this error's Reason, so that errors.Is(err, ErrRunNotFound)
// works on any error that wraps an *Error.
func (e *Error) Is(target error) bool {
	r, ok := target.(Reason)
	return ok && r != "" && r == e.Reason
}

// GRPCStatus returns the status that the error was decoded from, so that status.Code,
// status.FromError and status.Convert treat an *Error like the gRPC error it came from.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Violation returns the description of the first violation of field, if there is one.
func (e *Error) Violation(field string) (string, bool) {
	for _, v := range e.FieldViolations {
		if v.Field == field {
			return v.Description, true
		}
	}
	return "", false
}

// AsError returns err as an *Error: the one it wraps, or one decoded from the gRPC status it
// carries. It returns false for nil and for errors that carry no gRPC status.
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return nil, false
	}
	return fromStatus(st), true
}

// IsReason reports whether err failed with the given ErrorInfo reason, such as
// "INVALID_RESUME_DATA". It accepts both errors returned by a Client and raw gRPC errors.
func IsReason(err error, reason Reason) bool {
	e, ok := AsError(err)
	return ok && reason != "" && e.Reason == reason
}

func fromStatus(st *status.Status) *Error {
	if limited := receiveLimitStatus(st); limited != nil {
		st = limited
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = Reason(d.GetReason()), d.GetDomain(), d.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{v.GetField(), v.GetDescription()})
			}
		case *waystationv1.SuspendedStepsDetail:
			e.Suspended, e.ResumeLabels = d.GetSuspended(), d.GetResumeLabels()
		}
	}
	return e
}

// domain is the ErrorInfo domain of the server's errors.
const domain = "waystation.dev"

// How grpc-go reports an answer over the connection's receive limit. A request over the
// server's limit reads "SERVER: Received message larger than max ..." instead.
var receiveLimit = regexp.MustCompile(`^grpc: (?:received )?message (?:after decompression )?larger than max \((\d+) vs\. (\d+)\)$`)

// receiveLimitStatus turns the status of an answer that the client's receive limit refused
// into the one the server gives an answer over its own limit (RESPONSE_TOO_LARGE), saying
// that the call took effect, which gRPC's does not. It returns nil for any other status.
func receiveLimitStatus(st *status.Status) *status.Status {
	if st.Code() != codes.ResourceExhausted || len(st.Proto().GetDetails()) > 0 {
		return nil
	}
	m := receiveLimit.FindStringSubmatch(st.Message())
	if m == nil {
		return nil
	}
	msg := fmt.Sprintf("the answer is %s bytes, more than this client's %s-byte receive limit"+
		" (WithMaxReceiveMessageBytes); the server made it, so a call that changes a run took"+
		" effect: read the run with GetRun (without include_state), or raise the limit", m[1], m[2])
	limited, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.ErrorInfo{
		Reason:   string(ErrResponseTooLarge),
		Domain:   domain,
		Metadata: map[string]string{"size": m[1], "limit": m[2], "limit_of": "client"},
	})
	if err != nil {
		return nil
	}
	return limited
}
