package waystation_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/waystation/waystation/clients/go/waystation"
)

func TestPathSplitsTheTextFormOnDots(t *testing.T) {
	if got := waystation.Path("review.legal-review").GetSegments(); !slices.Equal(got, []string{"review", "legal-review"}) {
		t.Errorf("Path = %v", got)
	}
	if got := waystation.Path("").GetSegments(); len(got) != 0 {
		t.Errorf("Path(\"\") = %v, want no segments", got)
	}
	if got := waystation.PathOf("a.b", "c"); waystation.PathString(got) != "a.b.c" || len(got.GetSegments()) != 2 {
		t.Errorf("PathOf keeps segments whole: %v", got)
	}
}

func TestValueAcceptsJSONLikeDataAndStructs(t *testing.T) {
	type decision struct {
		Approved bool     `json:"approved"`
		Tags     []string `json:"tags"`
	}
	v, err := waystation.Value(decision{Approved: true, Tags: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	fields := v.GetStructValue().GetFields()
	if !fields["approved"].GetBoolValue() || fields["tags"].GetListValue().GetValues()[0].GetStringValue() != "x" {
		t.Errorf("Value(struct) = %v", v)
	}
	var back decision
	if err := waystation.DecodeValue(v, &back); err != nil || !back.Approved || !slices.Equal(back.Tags, []string{"x"}) {
		t.Errorf("DecodeValue = %+v, %v", back, err)
	}
	same := structpb.NewStringValue("s")
	if got, _ := waystation.Value(same); got != same {
		t.Error("Value(*structpb.Value) copies it")
	}
	if _, err := waystation.Value(make(chan int)); err == nil {
		t.Error("Value(chan) succeeded")
	}
}
