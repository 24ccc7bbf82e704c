// Package events declares the events of the sqlc golden case.
package events

import "github.com/google/uuid"

// UserSignedUp: a user signed up.
//
//eventbus:event name=app.user.signed_up aggregate=UserID
type UserSignedUp struct {
	UserID uuid.UUID `json:"user_id"`
	Email  string    `json:"email"`
}

// UserDeleted: a user was deleted.
//
//eventbus:event name=app.user.deleted aggregate=UserID version=3
type UserDeleted struct {
	UserID uuid.UUID `json:"user_id"`
}
