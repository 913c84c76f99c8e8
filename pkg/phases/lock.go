package phases

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

// DefaultLeaseDuration is how long another run must watch a lock
// unrenewed before it takes it over: a run renews it every third of that,
// so only a dead (or cut off) run lets that happen.
const DefaultLeaseDuration = 30 * time.Second

// LockedError says who holds a namespace's lock, and what this run saw of
// it: a lease is judged by watching it, never by comparing its renew time
// with this machine's clock (the holder's clock may differ by any amount).
type LockedError struct {
	Namespace string
	Holder    string
	// Acquired, Renewed and Expires are the holder's times, by its clock.
	Acquired time.Time
	Renewed  time.Time
	Expires  time.Time
	// Duration is the holder's lease duration; Watched how long this run
	// saw the lease unchanged; Renewing that it saw the lease change (its
	// holder is alive).
	Duration time.Duration
	Watched  time.Duration
	Renewing bool
}

func (e *LockedError) Error() string {
	head := fmt.Sprintf("namespace %s is locked by %q (since %s, last renewed %s by its clock)",
		e.Namespace, e.Holder, e.Acquired.Format(time.RFC3339), e.Renewed.Format(time.RFC3339))
	unlock := fmt.Sprintf("or, if you know that run is dead, `kubectl meshmigrate unlock -n %s`", e.Namespace)
	switch {
	case e.Renewing:
		return fmt.Sprintf("%s: another run is migrating it (it renewed the lock while this run waited); wait for it (--wait-for-lock 5m), %s", head, unlock)
	case e.Watched <= 0:
		return fmt.Sprintf("%s: another run is migrating it, or it died; a dead holder's lock is taken over only after watching it unrenewed for %s: wait for it (--wait-for-lock %s), %s",
			head, shortDuration(e.Duration), shortDuration(2*e.Duration), unlock)
	default:
		return fmt.Sprintf("%s: it has not been renewed in the %s this run watched it, and a dead holder's lock is taken over only after watching it unrenewed for %s: wait longer (--wait-for-lock %s), %s",
			head, shortDuration(e.Watched), shortDuration(e.Duration), shortDuration(2*e.Duration), unlock)
	}
}

// shortDuration writes whole seconds as a flag value: 1m, 45s, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Lock is a held Lease on a namespace. The Lease is the only object the
// tool writes by update rather than server-side apply: taking it must be a
// compare-and-swap on its resourceVersion, which apply does not give.
type Lock struct {
	c        *Cluster
	ns       string
	identity string
	duration time.Duration
	lease    *coordinationv1.Lease
	// renewed is when this run sent its last write of the lease that
	// succeeded, by its own clock (guarded by Locks.mu once shared): no
	// other run can take the lease over until it has watched it unchanged
	// for the duration after that.
	renewed time.Time
	// TookOver names the holder of a dead run's lease this lock replaced.
	TookOver string
}

// LockInfo is a lease as `status` shows it. Its times are the holder's,
// by the holder's clock: Expires is when the holder says the lease ends
// unless renewed, not a verdict (only watching the lease tells a dead
// holder from a clock that differs).
type LockInfo struct {
	Holder   string    `json:"holder,omitempty"`
	Acquired time.Time `json:"acquired,omitempty"`
	Renewed  time.Time `json:"renewed,omitempty"`
	Expires  time.Time `json:"expires,omitempty"`
	Held     bool      `json:"held"`
}

func leaseInfo(l *coordinationv1.Lease) LockInfo {
	var in LockInfo
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return in
	}
	in.Holder = *l.Spec.HolderIdentity
	if l.Spec.AcquireTime != nil {
		in.Acquired = l.Spec.AcquireTime.Time
	}
	if l.Spec.RenewTime != nil {
		in.Renewed = l.Spec.RenewTime.Time
	}
	in.Expires = in.Renewed.Add(leaseDuration(l))
	in.Held = true
	return in
}

// leaseDuration is the holder's lease duration, which a waiter must watch
// the lease unchanged for (the holder renews at a third of it).
func leaseDuration(l *coordinationv1.Lease) time.Duration {
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return DefaultLeaseDuration
}

// LockState reads who holds the namespace's lock (nil: never locked).
func (c *Cluster) LockState(ctx context.Context, ns string) (*LockInfo, error) {
	var l *coordinationv1.Lease
	err := onTransient(ctx, func() error {
		var err error
		l, err = c.Kube.CoordinationV1().Leases(ns).Get(ctx, LeaseName, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the lock %s/%s: %w", ns, LeaseName, err)
	}
	in := leaseInfo(l)
	return &in, nil
}

// lockPoll is how often a waiting run looks at the lease again.
const lockPoll = 2 * time.Second

// leaseWatch is what a waiting run has seen of another run's lease, as
// client-go's leader election keeps it: the lease's version and when, by
// this run's clock, it was first seen. The lease is dead only once that
// version has stayed for the lease duration; the holder's renew time is
// never compared with this machine's clock.
type leaseWatch struct {
	version leaseVersion
	since   time.Time
	// changed: the lease changed while watched, so its holder is alive.
	changed bool
}

// leaseVersion tells one state of a lease from another: every write
// changes the resourceVersion, a renewal also the renew time.
type leaseVersion struct {
	resourceVersion, holder string
	renewed                 time.Time
}

// observe records the lease as seen at t and returns how long it has been
// seen unchanged.
func (w *leaseWatch) observe(l *coordinationv1.Lease, t time.Time) time.Duration {
	in := leaseInfo(l)
	v := leaseVersion{resourceVersion: l.ResourceVersion, holder: in.Holder, renewed: in.Renewed}
	if w.since.IsZero() || v != w.version {
		w.changed = w.changed || !w.since.IsZero()
		w.version, w.since = v, t
	}
	return t.Sub(w.since)
}

// Acquire takes the namespace's lock for identity, waiting up to wait for
// a live holder to let go. A released lease is taken at once; another
// run's lease is taken over only once this run has watched it unchanged
// for its duration (its holder stopped renewing: it crashed or was
// killed), so a wait shorter than that never takes over a lease.
// It waits with the executor's one wait policy (poll, on clk): wait 0
// tries once, and a transient error is "not yet".
func (c *Cluster) Acquire(ctx context.Context, ns, identity string, duration, wait time.Duration, clk clock.Clock) (*Lock, error) {
	var (
		w    leaseWatch
		lk   *Lock
		last error // why the last attempt did not take it
	)
	err := poll(ctx, clk, lockPoll, wait, func(ctx context.Context) (bool, error) {
		var err error
		lk, err = c.tryAcquire(ctx, ns, identity, duration, clk.Now, &w)
		last = err
		if _, locked := err.(*LockedError); locked {
			return false, nil
		}
		return err == nil, err
	})
	switch {
	case err == nil:
		return lk, nil
	case last == nil || errors.Is(err, last):
		return nil, err
	case err == errTimedOut:
		return nil, last
	}
	return nil, fmt.Errorf("%w (stopped waiting: %v)", last, err)
}

func (c *Cluster) tryAcquire(ctx context.Context, ns, identity string, duration time.Duration, now func() time.Time, w *leaseWatch) (*Lock, error) {
	leases := c.Kube.CoordinationV1().Leases(ns)
	start := now()
	t := metav1.NewMicroTime(start)
	secs := int32(duration / time.Second)
	// The fence goes by the whole seconds the Lease stores: what another
	// run watches it for.
	lk := &Lock{c: c, ns: ns, identity: identity, duration: time.Duration(secs) * time.Second, renewed: start}
	var cur *coordinationv1.Lease
	err := onTransient(ctx, func() error {
		var err error
		cur, err = leases.Get(ctx, LeaseName, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeaseName, Namespace: ns,
				Labels: map[string]string{plan.LabelManagedBy: plan.ManagedBy, LabelComponent: "lock"}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &identity, LeaseDurationSeconds: &secs, AcquireTime: &t, RenewTime: &t},
		}
		var created *coordinationv1.Lease
		err := onTransient(ctx, func() error {
			var err error
			created, err = leases.Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
			return err
		})
		if apierrors.IsAlreadyExists(err) {
			// Someone (or our own create, whose response was lost) made it.
			return c.tryAcquire(ctx, ns, identity, duration, now, w)
		}
		if err != nil {
			return nil, fmt.Errorf("create the lock %s/%s: %w", ns, LeaseName, err)
		}
		lk.lease = created
		return lk, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the lock %s/%s: %w", ns, LeaseName, err)
	}
	in := leaseInfo(cur)
	if in.Held && in.Holder != identity {
		d := leaseDuration(cur)
		if watched := w.observe(cur, now()); watched < d {
			return nil, &LockedError{Namespace: ns, Holder: in.Holder, Acquired: in.Acquired, Renewed: in.Renewed, Expires: in.Expires,
				Duration: d, Watched: watched, Renewing: w.changed}
		}
		lk.TookOver = in.Holder
	}
	next := cur.DeepCopy()
	next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds = &identity, &secs
	next.Spec.AcquireTime, next.Spec.RenewTime = &t, &t
	var updated *coordinationv1.Lease
	err = onTransient(ctx, func() error {
		var err error
		// Conditional on the version watched: a renewal since then fails it.
		updated, err = leases.Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if apierrors.IsConflict(err) {
		// Someone else moved first (or our own update, whose response was
		// lost, did): look again.
		return c.tryAcquire(ctx, ns, identity, duration, now, w)
	}
	if err != nil {
		return nil, fmt.Errorf("take the lock %s/%s: %w", ns, LeaseName, err)
	}
	lk.lease = updated
	return lk, nil
}

// Renew extends the lease; it fails if another run took it over.
func (l *Lock) Renew(ctx context.Context, now time.Time) error {
	leases := l.c.Kube.CoordinationV1().Leases(l.ns)
	t := metav1.NewMicroTime(now)
	var updated *coordinationv1.Lease
	err := onTransient(ctx, func() error {
		next := l.lease.DeepCopy()
		next.Spec.RenewTime = &t
		var err error
		updated, err = leases.Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
		if apierrors.IsConflict(err) {
			// Still ours (a lost response of our own renewal moved it)?
			cur, gerr := leases.Get(ctx, LeaseName, metav1.GetOptions{})
			if gerr != nil {
				return gerr
			}
			if h := cur.Spec.HolderIdentity; h == nil || *h != l.identity {
				return err
			}
			l.lease = cur
			return apierrors.NewServiceUnavailable("retry the renewal on the current version")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("renew the lock %s/%s: %w (another run may have taken it over)", l.ns, LeaseName, err)
	}
	l.lease = updated
	return nil
}

// Release lets the lock go, keeping the Lease (its times say when the last
// run ended).
func (l *Lock) Release(ctx context.Context) error {
	next := l.lease.DeepCopy()
	next.Spec.HolderIdentity = nil
	err := onTransient(ctx, func() error {
		_, err := l.c.Kube.CoordinationV1().Leases(l.ns).Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("release the lock %s/%s: %w", l.ns, LeaseName, err)
	}
	return nil
}

// Unlock clears the namespace's lock whoever holds it: for the operator who
// knows its holder is dead and will not wait for it to expire.
func (c *Cluster) Unlock(ctx context.Context, ns string) (*LockInfo, error) {
	var before *LockInfo
	err := retryConflict(ctx, func() error {
		l, err := c.Kube.CoordinationV1().Leases(ns).Get(ctx, LeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		in := leaseInfo(l)
		before = &in
		if !in.Held {
			return nil
		}
		l.Spec.HolderIdentity = nil
		_, err = c.Kube.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("unlock %s/%s: %w", ns, LeaseName, err)
	}
	return before, nil
}

// Locks holds the locks of one run and keeps them alive: each lock is
// renewed from the moment it is taken, also while the run waits for the
// next one. While held they fence the run's writes (Cluster.fence).
type Locks struct {
	c   *Cluster
	now func() time.Time
	mu  sync.Mutex
	// held and lost (the renewal that failed), and each Lock's renewed,
	// are guarded by mu.
	held []*Lock
	lost error
	stop chan struct{}
	done chan struct{}
}

// ErrLockLost is the fence's refusal: a run that lost its lock writes
// nothing more.
var ErrLockLost = errors.New("this run lost its lock")

// AcquireAll locks the namespaces in name order (two runs over overlapping
// sets then cannot each hold a part the other waits for), renewing every
// third of duration; lost is called (once) if a renewal fails, to stop the
// run. On failure it releases what it took. Once they are all taken, the
// locks fence c's writes until Release or Delete.
func (c *Cluster) AcquireAll(ctx context.Context, namespaces []string, identity string, duration, wait time.Duration, clk clock.Clock, lost func(error)) (*Locks, error) {
	names := append([]string(nil), namespaces...)
	sort.Strings(names)
	ls := &Locks{c: c, now: clk.Now, stop: make(chan struct{}), done: make(chan struct{})}
	go ls.keepAlive(ctx, duration, lost)
	for _, ns := range names {
		lk, err := c.Acquire(ctx, ns, identity, duration, wait, clk)
		if err != nil {
			ls.Release(context.WithoutCancel(ctx))
			return nil, err
		}
		ls.mu.Lock()
		ls.held = append(ls.held, lk)
		ls.mu.Unlock()
	}
	c.fence.Store(ls)
	return ls, nil
}

// Held returns the locks, to report takeovers.
func (ls *Locks) Held() []*Lock {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]*Lock(nil), ls.held...)
}

func (ls *Locks) keepAlive(ctx context.Context, duration time.Duration, lost func(error)) {
	defer close(ls.done)
	t := time.NewTicker(duration / 3)
	defer t.Stop()
	for {
		select {
		case <-ls.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if err := ls.renew(ctx); err != nil {
				if ctx.Err() == nil {
					lost(err)
				}
				return
			}
		}
	}
}

// renew renews every lock once. A failure closes the fence first, then is
// returned; one because the run was cancelled does not: its locks stay
// good until the duration after their last renewal.
func (ls *Locks) renew(ctx context.Context) error {
	for _, lk := range ls.Held() {
		// The time before the write: the lease is ours for the duration
		// after it, whenever the server applied the write.
		t := ls.now()
		err := lk.Renew(ctx, t)
		ls.mu.Lock()
		switch {
		case err == nil:
			lk.renewed = t
		case ctx.Err() == nil:
			ls.lost = err
		}
		ls.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// fenced says whether the run may still write: no renewal failed and every
// lock was renewed less than its duration ago by this run's clock (another
// run takes a lease over only after watching it unrenewed that long).
func (ls *Locks) fenced() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lost != nil {
		return fmt.Errorf("%w (%v)", ErrLockLost, ls.lost)
	}
	t := ls.now()
	for _, lk := range ls.held {
		if age := t.Sub(lk.renewed); age >= lk.duration {
			return fmt.Errorf("%w (its lock %s/%s was last renewed %s ago, and a lock unrenewed for %s may be taken over)",
				ErrLockLost, lk.ns, LeaseName, age.Round(time.Second), shortDuration(lk.duration))
		}
	}
	return nil
}

// stopRenewing ends the renewals and the fence (idempotent).
func (ls *Locks) stopRenewing() {
	ls.c.fence.CompareAndSwap(ls, nil)
	if ls.stop != nil {
		close(ls.stop)
		<-ls.done
		ls.stop = nil
	}
}

// Release stops the renewals and lets every lock go.
func (ls *Locks) Release(ctx context.Context) error {
	if ls == nil {
		return nil
	}
	ls.stopRenewing()
	var first error
	for _, lk := range ls.Held() {
		if err := lk.Release(ctx); err != nil && first == nil {
			first = err
		}
	}
	ls.mu.Lock()
	ls.held = nil
	ls.mu.Unlock()
	return first
}

// Delete stops the renewals and deletes the Leases, each only if it is
// still the version this run last wrote (so a run that took a lease over
// keeps it): a full rollback leaves nothing of the tool behind.
func (ls *Locks) Delete(ctx context.Context) error {
	ls.stopRenewing()
	for _, lk := range ls.Held() {
		rv := lk.lease.ResourceVersion
		err := onTransient(ctx, func() error {
			return lk.c.Kube.CoordinationV1().Leases(lk.ns).Delete(ctx, LeaseName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete the lock %s/%s: %w", lk.ns, LeaseName, err)
		}
	}
	ls.mu.Lock()
	ls.held = nil
	ls.mu.Unlock()
	return nil
}

func retryConflict(ctx context.Context, fn func() error) error {
	return onTransient(ctx, func() error { return retry.RetryOnConflict(retry.DefaultRetry, fn) })
}

// deleteLease removes the namespace's Lease if nobody holds it, and only
// the version read: a run that takes the lock meanwhile keeps it.
func (c *Cluster) deleteLease(ctx context.Context, ns string) error {
	leases := c.Kube.CoordinationV1().Leases(ns)
	err := onTransient(ctx, func() error {
		l, err := leases.Get(ctx, LeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if in := leaseInfo(l); in.Held {
			return fmt.Errorf("it is held by %q", in.Holder)
		}
		rv := l.ResourceVersion
		return leases.Delete(ctx, LeaseName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the lock %s/%s: %w", ns, LeaseName, err)
	}
	return nil
}
