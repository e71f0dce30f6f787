package waystation

import (
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/waystation/waystation/clients/go/waystationv1"
)

// Value converts a JSON-like Go value to a google.protobuf.Value, the type of every input,
// result, payload and resume data in the API. It accepts what structpb.NewValue accepts
// (nil, bool, numbers, string, map[string]any, []any), an existing *structpb.Value or
// *structpb.Struct, and anything else that encoding/json can marshal, such as a struct with
// json tags or a []string.
func Value(v any) (*structpb.Value, error) {
	switch v := v.(type) {
	case *structpb.Value:
		return v, nil
	case *structpb.Struct:
		return structpb.NewStructValue(v), nil
	}
	if pv, err := structpb.NewValue(v); err == nil {
		return pv, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	pv := &structpb.Value{}
	if err := protojson.Unmarshal(b, pv); err != nil {
		return nil, err
	}
	return pv, nil
}

// DecodeValue stores a google.protobuf.Value in out, as json.Unmarshal would store the
// value's JSON: out may be a *map[string]any, a pointer to a struct with json tags, and so on.
func DecodeValue(v *structpb.Value, out any) error {
	b, err := protojson.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// Path makes a StepPath from its text form, splitting on ".": Path("review.legal-review")
// names the step legal-review inside the nested workflow review. Use PathOf for a step id
// that itself contains a dot.
func Path(text string) *waystationv1.StepPath {
	if text == "" {
		return &waystationv1.StepPath{}
	}
	return &waystationv1.StepPath{Segments: strings.Split(text, ".")}
}

// PathOf makes a StepPath from its segments, top-level step first.
func PathOf(segments ...string) *waystationv1.StepPath {
	return &waystationv1.StepPath{Segments: segments}
}

// PathString is the text form of a path ("review.legal-review"), the key of
// WorkflowResult.SuspendPayload.
func PathString(p *waystationv1.StepPath) string {
	return strings.Join(p.GetSegments(), ".")
}
