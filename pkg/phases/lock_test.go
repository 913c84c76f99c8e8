package phases

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const (
	alice = "alice@laptop pid 1 run aaaaaa"
	bob   = "bob@ci pid 2 run bbbbbb"
)

// fakeCluster is an API server whose Lease writes are compare-and-swap on
// the resourceVersion, as a real one's are (the fake's tracker does not
// check it).
func fakeCluster() *Cluster {
	cs := fake.NewClientset()
	tracker := cs.Tracker()
	cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		l.ResourceVersion = "1"
		return true, l, tracker.Create(a.GetResource(), l, a.GetNamespace())
	})
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		cur, err := tracker.Get(a.GetResource(), a.GetNamespace(), l.Name)
		if err != nil {
			return true, nil, err
		}
		if rv := cur.(*coordinationv1.Lease).ResourceVersion; rv != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), l.Name,
				fmt.Errorf("resourceVersion %s, stored %s: the object has been modified", l.ResourceVersion, rv))
		}
		n, _ := strconv.Atoi(l.ResourceVersion)
		l.ResourceVersion = strconv.Itoa(n + 1)
		return true, l, tracker.Update(a.GetResource(), l, a.GetNamespace())
	})
	return &Cluster{Kube: cs}
}

// at is a clock stopped at t.
func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func holder(t *testing.T, c *Cluster, ns string) string {
	t.Helper()
	l, err := c.Kube.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read the lease: %v", err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func TestAcquireCreatesTheLease(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if lk.TookOver != "" {
		t.Errorf("TookOver = %q on a fresh lock", lk.TookOver)
	}
	l, err := c.Kube.CoordinationV1().Leases("shop").Get(ctx, "meshmigrate-lock", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *l.Spec.HolderIdentity != alice || *l.Spec.LeaseDurationSeconds != 30 || !l.Spec.RenewTime.Time.Equal(t0) {
		t.Errorf("lease spec = holder %q, %ds, renewed %s", *l.Spec.HolderIdentity, *l.Spec.LeaseDurationSeconds, l.Spec.RenewTime)
	}
	if l.Labels[plan.LabelManagedBy] != plan.ManagedBy || l.Labels[LabelComponent] != "lock" {
		t.Errorf("lease labels = %v", l.Labels)
	}
	in, err := c.LockState(ctx, "shop")
	if err != nil || in == nil || !in.Held || in.Holder != alice || !in.Expires.Equal(t0.Add(30*time.Second)) {
		t.Errorf("LockState = %+v, %v", in, err)
	}
}

func TestAcquireAgainBySameHolder(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0.Add(time.Second)))
	if err != nil {
		t.Fatalf("re-acquiring one's own lock: %v", err)
	}
	if lk.TookOver != "" {
		t.Errorf("re-acquiring one's own lock took it over from %q", lk.TookOver)
	}
}

func TestAcquireLockedNamesTheHolder(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// --wait-for-lock 0 fails at once, even on a clock that does not move.
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Acquire(waitCtx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(10*time.Second)))
	if d := time.Since(start); d > time.Second || strings.Contains(fmt.Sprint(err), "stopped waiting") {
		t.Errorf("wait 0 waited %s: %v", d, err)
	}
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("second run: %v, want a *LockedError", err)
	}
	if locked.Holder != alice || locked.Namespace != "shop" || !locked.Expires.Equal(t0.Add(30*time.Second)) {
		t.Errorf("LockedError = %+v", locked)
	}
	for _, want := range []string{`namespace shop is locked by "` + alice + `"`, "--wait-for-lock", "`kubectl meshmigrate unlock -n shop`"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if h := holder(t, c, "shop"); h != alice {
		t.Errorf("the failed attempt changed the holder to %q", h)
	}
}

func TestAcquireTakesOverAnExpiredLock(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// Alice's run died: nobody renewed for longer than the duration.
	later := t0.Add(DefaultLeaseDuration + time.Second)
	lk, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(later))
	if err != nil {
		t.Fatalf("taking over an expired lock: %v", err)
	}
	if lk.TookOver != alice {
		t.Errorf("TookOver = %q, want %q (apply reports whose lock it took)", lk.TookOver, alice)
	}
	if h := holder(t, c, "shop"); h != bob {
		t.Errorf("holder = %q, want %q", h, bob)
	}
	in, _ := c.LockState(ctx, "shop")
	if !in.Acquired.Equal(later) {
		t.Errorf("acquired %s, want %s", in.Acquired, later)
	}
}

func TestRenewAfterTakeoverFails(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	mine, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := mine.Renew(ctx, t0.Add(10*time.Second)); err != nil {
		t.Fatalf("renewing a held lock: %v", err)
	}
	in, _ := c.LockState(ctx, "shop")
	if !in.Renewed.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("renewed %s, want t0+10s", in.Renewed)
	}
	// Alice stalled past expiry and Bob took over: her run must stop.
	if _, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	err = mine.Renew(ctx, t0.Add(61*time.Second))
	if err == nil || !strings.Contains(err.Error(), "another run may have taken it over") {
		t.Errorf("renewing a lock taken over: %v", err)
	}
	if h := holder(t, c, "shop"); h != bob {
		t.Errorf("the stale renewal gave the lock back to %q", h)
	}
}

func TestReleaseAndUnlock(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h := holder(t, c, "shop"); h != "" {
		t.Errorf("holder after release = %q", h)
	}
	if in, _ := c.LockState(ctx, "shop"); in == nil || in.Held {
		t.Errorf("LockState after release = %+v, want a free lease", in)
	}
	// Released: Bob gets it at once, without a takeover.
	lk, err = c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(time.Second)))
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if lk.TookOver != "" {
		t.Errorf("acquire after release took over from %q", lk.TookOver)
	}

	before, err := c.Unlock(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if before == nil || !before.Held || before.Holder != bob {
		t.Errorf("Unlock returned %+v, want Bob's lock", before)
	}
	if h := holder(t, c, "shop"); h != "" {
		t.Errorf("holder after unlock = %q", h)
	}
	if again, err := c.Unlock(ctx, "shop"); err != nil || again == nil || again.Held {
		t.Errorf("unlocking a free lock: %+v, %v", again, err)
	}
	if never, err := c.Unlock(ctx, "payments"); err != nil || never != nil {
		t.Errorf("unlocking a namespace never locked: %+v, %v", never, err)
	}
}

func TestAcquireAllReleasesOnFailure(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// In name order: cart is taken, then shop is Bob's.
	ls, err := c.AcquireAll(ctx, []string{"shop", "cart"}, alice, DefaultLeaseDuration, 0, at(t0), func(error) {})
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Namespace != "shop" || ls != nil {
		t.Fatalf("AcquireAll = %v, %v; want shop locked by Bob", ls, err)
	}
	if h := holder(t, c, "cart"); h != "" {
		t.Errorf("cart still held by %q after the run gave up", h)
	}
	if h := holder(t, c, "shop"); h != bob {
		t.Errorf("shop holder = %q, want Bob untouched", h)
	}

	ls, err = c.AcquireAll(ctx, []string{"shop", "cart", "payments"}, bob, DefaultLeaseDuration, 0, at(t0), func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, lk := range ls.Held() {
		got = append(got, lk.ns)
	}
	if strings.Join(got, ",") != "cart,payments,shop" {
		t.Errorf("locked %v, want name order", got)
	}
	if err := ls.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ns := range got {
		if h := holder(t, c, ns); h != "" {
			t.Errorf("%s still held by %q after Release", ns, h)
		}
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	theirs, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		released <- theirs.Release(ctx)
	}()
	start := time.Now()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 10*time.Second, time.Now)
	if err != nil {
		t.Fatalf("waiting for the lock: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if lk.TookOver != "" || holder(t, c, "shop") != alice {
		t.Errorf("took over %q, holder %q: want Alice, after Bob let go", lk.TookOver, holder(t, c, "shop"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %s for a lock released after 100ms", d)
	}
}

func TestAcquireStopsWaitingWhenCancelled(t *testing.T) {
	c := fakeCluster()
	if _, err := c.Acquire(context.Background(), "shop", bob, DefaultLeaseDuration, 0, time.Now); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, time.Minute, time.Now)
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Holder != bob || !strings.Contains(err.Error(), "stopped waiting") {
		t.Errorf("cancelled wait: %v, want Bob's LockedError and why it stopped", err)
	}
}
