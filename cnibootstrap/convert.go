package cnibootstrap

import (
	"fmt"
	"reflect"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// This file holds the helpers that read unstructured objects as typed
// ones and compare pod templates.

// fromUnstructured converts m (an object or a part of one, as the dynamic
// client decoded it) into out, a pointer to a typed API struct; a panic of
// the converter on a malformed object is an error.
func fromUnstructured(m map[string]any, out any) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("cannot decode: %v", v)
		}
	}()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, out); err != nil {
		return fmt.Errorf("cannot decode: %w", err)
	}
	return nil
}

// decode converts obj into out, naming obj's kind in the error.
func decode(obj *unstructured.Unstructured, out any) error {
	if err := fromUnstructured(obj.Object, out); err != nil {
		return fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}

// sameTemplate reports whether two pod templates, as decoded from JSON,
// are the same once the label dropLabel (a controller's revision hash) is
// removed from b, a "$patch" directive is removed from either, and null
// values and empty maps and lists (which one serializer writes and
// another omits) are pruned.
func sameTemplate(a, b map[string]any, dropLabel string) bool {
	a, _ = prune(a).(map[string]any)
	b, _ = prune(b).(map[string]any)
	if a == nil || b == nil {
		return false
	}
	if md, ok := b["metadata"].(map[string]any); ok {
		if labels, ok := md["labels"].(map[string]any); ok {
			delete(labels, dropLabel)
			if len(labels) == 0 {
				delete(md, "labels")
			}
		}
		if len(md) == 0 {
			delete(b, "metadata")
		}
	}
	delete(a, "$patch")
	delete(b, "$patch")
	return reflect.DeepEqual(a, b)
}

// prune returns a deep copy of v without null values and empty maps and
// lists (nil when v is one of those), with int and int32 as int64.
func prune(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if p := prune(x); p != nil {
				out[k] = p
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case []any:
		if len(v) == 0 {
			return nil
		}
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = prune(x)
		}
		return out
	case int:
		return int64(v)
	case int32:
		return int64(v)
	}
	return v
}
