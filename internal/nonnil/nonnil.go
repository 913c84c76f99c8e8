// Package nonnil makes Go values encode as JSON (and YAML through
// sigs.k8s.io/yaml) without null lists or maps: scripts that read the
// outputs iterate over every list, and `jq '.findings[]'` fails on null.
// Every output passes through Fill just before it is encoded.
package nonnil

import (
	"reflect"
	"strings"
)

// Fill replaces each nil slice and map reachable from v, a pointer, that
// encoding/json would write as null with an empty one, so it writes [] or
// {}. It leaves alone fields that are not written (`json:"-"`) or left out
// when empty (omitempty: absent, never null), and what is held in an
// interface: embedded foreign documents (Kubernetes objects) whose nulls
// mean something.
func Fill(v any) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer {
		panic("nonnil.Fill needs a pointer, got " + rv.Kind().String())
	}
	fill(rv)
}

func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			fill(v.Elem())
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" && opts == "" {
				continue
			}
			fv := v.Field(i)
			if omitEmpty(opts) && (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.IsNil() {
				continue
			}
			fill(fv)
		}
	case reflect.Slice:
		if v.IsNil() {
			if v.CanSet() && v.Type().Elem().Kind() != reflect.Uint8 { // []byte is a string in JSON
				v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			}
			return
		}
		for i := range v.Len() {
			fill(v.Index(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			if v.CanSet() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			return
		}
		if !holdsLists(v.Type().Elem()) {
			return
		}
		// Map elements cannot be changed in place: fill a copy, store it.
		iter := v.MapRange()
		for iter.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			fill(e)
			v.SetMapIndex(iter.Key(), e)
		}
	}
}

func omitEmpty(opts string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == "omitempty" {
			return true
		}
	}
	return false
}

// holdsLists tells whether a value of type t may hold a slice or map for
// Fill to fill.
func holdsLists(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Struct, reflect.Slice, reflect.Array, reflect.Map:
		return true
	}
	return false
}
