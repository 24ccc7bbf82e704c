package events

import (
	"time"

	"github.com/google/uuid"
)

// PulseCreated: an instructor published a new learning pulse.
//
//eventbus:event name=edupulse.pulse.created version=1 aggregate=PulseID
type PulseCreated struct {
	PulseID     uuid.UUID `json:"pulse_id"`
	AuthorID    uuid.UUID `json:"author_id"`
	Title       string    `json:"title"`
	PublishedAt time.Time `json:"published_at"`
}

// PulseAnswered: a learner submitted an answer to a pulse. This is
// version 1, from before answers were graded; producers now publish
// PulseAnsweredV2, and UpcastPulseAnswered converts the version 1 events
// still stored or in flight.
//
//eventbus:event name=edupulse.pulse.answered version=1 aggregate=PulseID
type PulseAnswered struct {
	PulseID    uuid.UUID `json:"pulse_id"`
	AnswerID   uuid.UUID `json:"answer_id"`
	StudentID  uuid.UUID `json:"student_id"`
	AnsweredAt time.Time `json:"answered_at"`
}

// PulseAnsweredV2: a learner submitted an answer to a pulse, graded.
//
//eventbus:event name=edupulse.pulse.answered version=2 aggregate=PulseID
type PulseAnsweredV2 struct {
	PulseID   uuid.UUID `json:"pulse_id"`
	AnswerID  uuid.UUID `json:"answer_id"`
	StudentID uuid.UUID `json:"student_id"`
	// Correct tells whether the answer was right.
	Correct    bool      `json:"correct"`
	AnsweredAt time.Time `json:"answered_at"`
}

// UpcastPulseAnswered converts version 1 of edupulse.pulse.answered into
// version 2. Version 1 predates grading, when every answer counted as a
// correct one: it converts with Correct set.
//
//eventbus:upcast
func UpcastPulseAnswered(v1 PulseAnswered) PulseAnsweredV2 {
	return PulseAnsweredV2{
		PulseID:    v1.PulseID,
		AnswerID:   v1.AnswerID,
		StudentID:  v1.StudentID,
		Correct:    true,
		AnsweredAt: v1.AnsweredAt,
	}
}

// BadgeAwarded: a badge was awarded to a user.
//
//eventbus:event name=edupulse.badge.awarded version=1 aggregate=UserID aggregate_type=user
type BadgeAwarded struct {
	BadgeID   uuid.UUID `json:"badge_id"`
	UserID    uuid.UUID `json:"user_id"`
	Reason    string    `json:"reason"`
	AwardedAt time.Time `json:"awarded_at"`
}

// LessonPublished: an instructor published a lesson.
//
//eventbus:event name=edupulse.lesson.published version=1 aggregate=LessonID
type LessonPublished struct {
	LessonID    uuid.UUID `json:"lesson_id"`
	AuthorID    uuid.UUID `json:"author_id"`
	Title       string    `json:"title"`
	PublishedAt time.Time `json:"published_at"`
}
