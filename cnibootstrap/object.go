package cnibootstrap

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ObjectExists requires one object to exist and, when Condition is set,
// to satisfy it; for example ClusterInformation "default" with
// spec.datastoreReady true, the object Calico's CNI plugin fails without.
// Its Name is "<resource>.<group>/<version> [<namespace>/]<name>".
//
// While the resource itself is not served (its CRD is missing or not
// established yet), the waiter follows that CRD (named
// "<resource>.<group>") and starts the object's watch the moment it is
// established; the reason then reads like
// "resource not served: crd clusterinformations.crd.projectcalico.org not found".
type ObjectExists struct {
	// GVR is the object's resource, for example
	// {Group: "crd.projectcalico.org", Version: "v1", Resource: "clusterinformations"}:
	// Group "" or a DNS-1123 subdomain, Version and Resource DNS-1123
	// labels (not a subresource).
	GVR schema.GroupVersionResource
	// Namespace is the object's namespace (a DNS-1123 label), "" for a
	// cluster-scoped object. On a namespaced resource, "" accepts an object of that name in any
	// namespace: the waiter follows every one of them, and the requirement
	// holds while at least one exists, is not being deleted and meets the
	// Condition (the reasons then name each as "<namespace>/<name>").
	Namespace string
	// Object is the object's name; it must be a valid path segment (no
	// "/" or "%", not "." or "..").
	Object string
	// Condition, when set, must hold on the object as well.
	Condition Condition
}

// A Condition says whether an object is ready: nil when it is, otherwise an
// error saying why not, which becomes the requirement's reason. It is
// called with an object it must not modify, and may be called from several
// goroutines at once (a Waiter's concurrent Wait and Check calls each
// evaluate it), so it must be safe for concurrent use.
//
// New calls every Condition once on an empty object: a Condition that can
// never hold (such as FieldEquals with an empty path) must return an error
// wrapping ErrInvalidInput there, and New rejects it; New also rejects a
// Condition that panics there. A Condition that panics while Wait or Check
// evaluates it leaves its requirement unmet, with a *PanicError as the
// Unmet entry's Err.
type Condition func(obj *unstructured.Unstructured) error

// FieldEquals returns a Condition that holds when the field at path (dot
// separated, as in "spec.datastoreReady") equals want, which must be a
// bool, a string, an integer or a floating-point number, or a value of a
// type defined on one of those (type Mode string, say: it compares as its
// underlying value). Numbers compare by value, so
// FieldEquals("spec.replicas", 3) matches the int64 3 of a decoded object.
// An empty path, another type of want, or a NaN or infinite want (which no
// decoded JSON holds, so the Condition could never hold) gives a Condition
// that New rejects. The reasons read like
// "spec.datastoreReady is false, want true".
func FieldEquals(path string, want any) Condition {
	fields := strings.Split(path, ".")
	bad := path == "" || strings.Contains(path, "..") || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".")
	norm, ok := normalize(want)
	f, isFloat := norm.(float64)
	nonFinite := isFloat && (math.IsNaN(f) || math.IsInf(f, 0))
	return func(obj *unstructured.Unstructured) error {
		switch {
		case bad:
			return fmt.Errorf("%w: FieldEquals: malformed path %q", ErrInvalidInput, path)
		case !ok:
			return fmt.Errorf("%w: FieldEquals(%q): want must be a bool, string or number, not %T", ErrInvalidInput, path, want)
		case nonFinite:
			return fmt.Errorf("%w: FieldEquals(%q): want %v can never be equal (no decoded JSON holds it)", ErrInvalidInput, path, f)
		case obj == nil:
			return errors.New("no object")
		}
		got, found, err := unstructured.NestedFieldNoCopy(obj.Object, fields...)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", path, err)
		case !found:
			return fmt.Errorf("%s is not set, want %s", path, show(norm))
		}
		if g, ok := normalize(got); !ok || !reflect.DeepEqual(g, norm) {
			return fmt.Errorf("%s is %s, want %s", path, show(got), show(norm))
		}
		return nil
	}
}

// normalize maps the scalar types FieldEquals accepts onto the ones
// unstructured objects hold: strings and bools (of defined types too) to
// string and bool, integers to int64 and floats to float64, with whole
// floats as int64 so that 3.0 equals 3.
func normalize(v any) (any, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return rv.Bool(), true
	case reflect.String:
		return rv.String(), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return int64(rv.Uint()), rv.Uint() <= 1<<63-1
	case reflect.Float32, reflect.Float64:
		// Whole floats in int64's range (checked first: converting one
		// outside it gives a platform-dependent value) compare as int64.
		f := rv.Float()
		if f >= -(1<<63) && f < 1<<63 && f == math.Trunc(f) {
			return int64(f), true
		}
		return f, true
	}
	return nil, false
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%v", v)
}

// Name returns "<resource>.<group>/<version> [<namespace>/]<name>", for
// example "clusterinformations.crd.projectcalico.org/v1 default".
func (r ObjectExists) Name() string {
	s := r.GVR.GroupResource().String() + "/" + r.GVR.Version + " "
	if r.Namespace != "" {
		s += r.Namespace + "/"
	}
	return s + r.Object
}

func (r ObjectExists) validate() error {
	if err := validObjectRef("ObjectExists", r.GVR, r.Namespace, r.Object); err != nil {
		return err
	}
	if r.Condition != nil {
		err := checkCondition(r.Name(), r.Condition, &unstructured.Unstructured{Object: map[string]any{}})
		if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrCallbackPanicked) {
			return fmt.Errorf("%w: ObjectExists %s: Condition on an empty object: %w", ErrInvalidInput, r.Name(), err)
		}
	}
	return nil
}

// validObjectRef checks the resource, namespace and name of the one
// object an ObjectExists or ObjectReady (what) names.
func validObjectRef(what string, gvr schema.GroupVersionResource, namespace, object string) error {
	ref := fmt.Sprintf("%s %q", what, object)
	if object == "" {
		ref = what + " " + gvr.GroupResource().String()
	}
	if err := validGVR(ref, "GVR", gvr); err != nil {
		return err
	}
	if err := validObjectName(what+" "+gvr.GroupResource().String(), "Object", object); err != nil {
		return err
	}
	if namespace != "" {
		return validNamespace(ref, namespace)
	}
	return nil
}

func (r ObjectExists) key() objKey {
	return objKey{gvr: r.GVR, namespace: r.Namespace, name: r.Object}
}

func (r ObjectExists) needs() needs { return needs{objects: []objKey{r.key()}} }

func (r ObjectExists) eval(v *view, _ int) *Unmet {
	objs, u := v.candidates(r.Name(), r.key())
	if u != nil || r.Condition == nil {
		return u
	}
	// Any object that holds the Condition meets the requirement (with an
	// empty Namespace on a namespaced resource there may be one per
	// namespace); otherwise every one's reason is reported.
	var why []string
	var perr error
	for _, obj := range objs {
		err := checkCondition(r.Name(), r.Condition, obj)
		if err == nil {
			return nil
		}
		if errors.As(err, new(*PanicError)) && perr == nil {
			perr = err
		}
		if q := qualified(r.key(), obj); q != r.Object {
			why = append(why, q+": "+err.Error())
		} else {
			why = append(why, err.Error())
		}
	}
	return &Unmet{Requirement: r.Name(), Reason: strings.Join(why, "; "), Err: perr}
}
