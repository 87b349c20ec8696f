package ike

import "fmt"

// String returns the payload type's abbreviation.
func (t PayloadType) String() string { return fmt.Sprintf("payload(%d)", uint8(t)) }

// String returns the exchange type's name.
func (e ExchangeType) String() string { return fmt.Sprintf("exchange(%d)", uint8(e)) }
