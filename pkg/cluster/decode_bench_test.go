package cluster

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// podPage is a list page of n pods as the API server returns it in
// mediaType: the pods of testdata (read from a kwok cluster of `make
// bench-estate`, with managedFields and kwok's status), 23 in 40 meshed, as
// in that estate.
func podPage(tb testing.TB, n int, mediaType string) []byte {
	tb.Helper()
	var meshed, plain corev1.Pod
	for path, into := range map[string]*corev1.Pod{"testdata/pod-meshed.json": &meshed, "testdata/pod-plain.json": &plain} {
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		if err := runtime.DecodeInto(scheme.Codecs.UniversalDecoder(), b, into); err != nil {
			tb.Fatalf("decode %s: %v", path, err)
		}
	}
	list := &corev1.PodList{}
	list.APIVersion, list.Kind = "v1", "PodList"
	for i := 0; i < n; i++ {
		p := plain.DeepCopy()
		if i*23%40 < 23 {
			p = meshed.DeepCopy()
		}
		p.Name = fmt.Sprintf("%s-%05d", p.Name, i)
		list.Items = append(list.Items, *p)
	}
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
	if !ok {
		tb.Fatalf("no serializer for %s", mediaType)
	}
	var buf bytes.Buffer
	if err := scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(list, &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecodePodPage decodes one page of 500 pods the way the typed
// client does, in JSON and in protobuf, and keeps the facts the audit uses
// (podFrom): the client-side cost of reading pods, per page.
func BenchmarkDecodePodPage(b *testing.B) {
	for _, mediaType := range []string{runtime.ContentTypeJSON, runtime.ContentTypeProtobuf} {
		b.Run(mediaType, func(b *testing.B) {
			page := podPage(b, 500, mediaType)
			info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
			dec := scheme.Codecs.WithoutConversion().DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var list corev1.PodList
				if err := runtime.DecodeInto(dec, page, &list); err != nil {
					b.Fatal(err)
				}
				for j := range list.Items {
					if pod, _ := podFrom(&list.Items[j]); pod.Name == "" {
						b.Fatal("no name")
					}
				}
			}
			b.ReportMetric(float64(len(page)), "bytes/page")
		})
	}
}
