package readiness

import (
	"context"
	"sync"
)

// A session is what one Wait shares between the Watch it runs and the
// attempts it makes: the state a watching check keeps from its watch
// events (the object last seen, the failures seen between two attempts),
// so that an attempt can read what the watch saw instead of asking the
// server again. Wait puts one in the context of both; a check called or
// watched outside Wait finds none and works on its own.
type session struct {
	mu     sync.Mutex
	states map[any]any
}

type sessionKey struct{}

// withSession returns ctx carrying a new, empty session.
func withSession(ctx context.Context) context.Context {
	return context.WithValue(ctx, sessionKey{}, &session{states: map[any]any{}})
}

// sessionState returns the state that key (a check) keeps in the session
// of ctx, made by mk on first use, or nil when ctx carries no session.
func sessionState[T any](ctx context.Context, key any, mk func() *T) *T {
	s, _ := ctx.Value(sessionKey{}).(*session)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.states[key].(*T); ok {
		return st
	}
	st := mk()
	s.states[key] = st
	return st
}
