package phases

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

// fencedCluster is fakeCluster (compare-and-swap Leases) with the dynamic
// fake of the executor tests for the objects a plan touches.
func fencedCluster(t *testing.T) (*Cluster, *dynamicfake.FakeDynamicClient) {
	c, dyn := newFakeCluster(t, namespaceObj("shop", map[string]any{"team": "shop"}))
	c.Kube = fakeCluster().Kube
	return c, dyn
}

// writeAll tries each kind of write the executor makes, returning their
// errors.
func writeAll(ctx context.Context, c *Cluster, at time.Time) map[string]error {
	pa := map[string]any{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": "shop"}, "spec": map[string]any{"mtls": map[string]any{"mode": "STRICT"}}}
	gvr, _ := resourceFor("security.istio.io/v1", "PeerAuthentication")
	_, applyErr := c.apply(ctx, gvr, "shop", pa)
	team := "other"
	return map[string]error{
		"apply":            applyErr,
		"patchLabels":      c.patchLabels(ctx, "shop", map[string]string{"team": "shop"}, map[string]*string{"team": &team}),
		"delete":           c.delete(ctx, gvr, "shop", "default", "uid-1"),
		"SaveCheckpoint":   c.SaveCheckpoint(ctx, &Checkpoint{Namespace: "shop", PlanID: "mp-1"}, alice, at),
		"DeleteCheckpoint": c.DeleteCheckpoint(ctx, "shop"),
	}
}

// kubeWrites are the writes the typed fake saw, but the Leases'.
func kubeWrites(c *Cluster) []string {
	var out []string
	for _, a := range c.Kube.(*fake.Clientset).Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" && a.GetResource().Resource != "leases" {
			out = append(out, v+" "+a.GetResource().Resource)
		}
	}
	return out
}

func checkRefused(t *testing.T, errs map[string]error, why string) {
	t.Helper()
	for w, err := range errs {
		if !errors.Is(err, ErrLockLost) || !strings.Contains(err.Error(), "this run lost its lock") ||
			!strings.Contains(err.Error(), "nothing more was written") || !strings.Contains(err.Error(), why) {
			t.Errorf("%s after the lock was lost: %v; want it refused, saying the lock was lost (%s) and nothing more was written", w, err, why)
		}
	}
}

// A run whose renewal failed (Bob took the lease over) writes nothing more:
// every write, even the checkpoint's (which ignores the run's
// cancellation), is refused before it reaches the API server.
func TestLostLockFencesWrites(t *testing.T) {
	ctx := context.Background()
	c, dyn := fencedCluster(t)
	alices := newClock(t0)
	ls, err := c.AcquireAll(ctx, []string{"shop"}, alice, DefaultLeaseDuration, 0, alices, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Release(ctx)
	// Held: the fence lets writes through.
	if _, err := c.apply(ctx, kinds["Namespace"], "", map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": "shop", "labels": map[string]any{"istio-injection": "enabled"}}}); err != nil {
		t.Fatalf("a write under a held lock: %v", err)
	}
	if err := c.SaveCheckpoint(ctx, &Checkpoint{Namespace: "shop", PlanID: "mp-1"}, alice, alices.now()); err != nil {
		t.Fatalf("a checkpoint under a held lock: %v", err)
	}
	// Alice's run stalls (renewals stuck, her clock still); Bob watches her
	// lease unrenewed for 30s and takes it over.
	bobs := newClock(t0)
	bobs.meanwhile = nil
	if _, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, time.Minute, bobs); err != nil {
		t.Fatal(err)
	}
	dyn.ClearActions()
	c.Kube.(*fake.Clientset).ClearActions()

	err = ls.renew(ctx)
	if err == nil {
		t.Fatal("Alice renewed a lock Bob holds")
	}
	checkRefused(t, writeAll(ctx, c, alices.now()), "another run may have taken it over")
	if w := writes(dyn); len(w) != 0 {
		t.Errorf("after the lock was lost these writes reached the API server: %v", w)
	}
	if w := kubeWrites(c); len(w) != 0 {
		t.Errorf("after the lock was lost these writes reached the API server: %v", w)
	}
}

// A run whose renewals stall writes nothing once its last renewal is as old
// as the lease duration (another run may have taken the lease over by
// then), even before a renewal fails; Release ends the fence.
func TestStalledLockFencesWrites(t *testing.T) {
	ctx := context.Background()
	c, dyn := fencedCluster(t)
	alices := newClock(t0)
	ls, err := c.AcquireAll(ctx, []string{"shop"}, alice, DefaultLeaseDuration, 0, alices, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	alices.add(DefaultLeaseDuration - time.Second)
	if err := c.DeleteCheckpoint(ctx, "shop"); err != nil {
		t.Fatalf("29s after the last renewal: %v", err)
	}
	alices.add(time.Second)
	dyn.ClearActions()
	c.Kube.(*fake.Clientset).ClearActions()
	checkRefused(t, writeAll(ctx, c, alices.now()), "last renewed 30s ago")
	if w := append(writes(dyn), kubeWrites(c)...); len(w) != 0 {
		t.Errorf("writes after the lock went unrenewed for 30s: %v", w)
	}
	// A renewal opens it again.
	if err := ls.renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCheckpoint(ctx, "shop"); err != nil {
		t.Errorf("after a renewal: %v", err)
	}
	alices.add(time.Hour)
	if err := ls.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if c.fence.Load() != nil {
		t.Error("the fence outlived Release")
	}
}
