package wasm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFrameContext: a guest call's context is done when its instance is
// killed, passes that on to contexts derived from it (as host functions
// make them), carries the call chain, and no other values.
func TestFrameContext(t *testing.T) {
	in := &instance{}
	in.base, in.cancel = context.WithCancelCause(context.Background())
	in.root = &frame{in: in}
	nested := &frame{in: &instance{}} // a call from another instance's host import

	cctx, err := in.nested(nested, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.nested(cctx.(*frame), "test"); !errors.Is(err, ErrReentrant) {
		t.Fatalf("re-entering the instance: %v", err)
	}
	child, cancelChild := context.WithTimeout(cctx, time.Minute)
	defer cancelChild()
	if f, _ := child.Value(frameKey{}).(*frame); f == nil || f.in != in || f.parent != nested {
		t.Fatalf("frame through a derived context: %+v", f)
	}
	if in.root.Value("other") != nil || in.root.Err() != nil {
		t.Fatal("a live frame has values or an error")
	}
	in.cancel(ErrLimit)
	select {
	case <-child.Done():
	case <-time.After(time.Minute):
		t.Fatal("derived context not cancelled with the instance")
	}
	if !errors.Is(in.root.Err(), context.Canceled) || context.Cause(in.base) != ErrLimit {
		t.Fatalf("err %v cause %v", in.root.Err(), context.Cause(in.base))
	}
}
