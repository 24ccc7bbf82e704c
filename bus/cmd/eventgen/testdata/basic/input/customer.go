package input

// Ref is a customer reference.
type Ref string

//eventbus:event name=shop.customer.renamed aggregate=CustomerRef
type CustomerRenamed struct {
	CustomerRef Ref      `json:"customer_ref"`
	Name        string   `json:"name"`
	URLs        []string `json:"urls"`
	ID          int      `json:"id"`
	HTTPHeaders map[string][]string
}

type (
	// TicketOpened: a support ticket was opened. The aggregate id is a
	// plain string.
	//
	//eventbus:event name=support.ticket.opened aggregate=TicketID
	TicketOpened struct {
		TicketID string
		Subject  string
	}
)
