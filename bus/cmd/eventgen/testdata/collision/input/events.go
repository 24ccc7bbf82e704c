package input

// Handler collides with the generated Handler interface.
//
//eventbus:event name=app.handler.made aggregate=ID
type Handler struct{ ID string }

// Foo is fine by itself.
//
//eventbus:event name=app.foo.made aggregate=ID
type Foo struct{ ID string }

// KindFoo collides with the Kind constant of Foo.
//
//eventbus:event name=app.kind_foo.made aggregate=ID
type KindFoo struct{ ID string }

// HTTPCall and HttpCall would share the query file http_call.sql.
//
//eventbus:event name=app.http.called aggregate=ID
type HTTPCall struct{ ID string }

// HttpCall is HTTPCall under another spelling.
//
//eventbus:event name=app.http.called_again aggregate=ID
type HttpCall struct{ ID string }
