package mqtt

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ecowatt/fota/protocol"
)

// Memory. With 10,000 devices connected and idle, what a connection costs
// is mostly its one goroutine's stack while parked in Read; the runtime
// shrinks a stack at GC while less than a quarter of it is in use. So the
// reader's loop (serve) holds a small fixed header and a body slice, and
// everything that decodes into a packets.Packet (several hundred bytes,
// and mochi's decoders and encoders below it) runs in functions that have
// returned before the next Read: connect and handle, kept out of serve by
// //go:noinline. The floor is 4 KiB: the runtime counts 800 bytes of
// guard as used, so a parked Read (about 1 KiB of frames down to netpoll)
// never lets a 4 KiB stack shrink to 2 KiB. Measured with 10,000 devices
// (BenchmarkBrokerConnections): 4.1 KiB of stack, 2.3 KiB of heap and
// 7.1 KiB of RSS a connection, where mochi's server took 28 KiB.

// conn is one client connection. Its only goroutine is the reader,
// serve; the notification worker writes to it under wmu.
type conn struct {
	b   *Broker
	raw net.Conn // the TCP connection: closing it ends everything
	nc  net.Conn // raw, or TLS over it
	r   *bufio.Reader

	// Set by the reader while it reads the CONNECT, before the connection
	// is registered (so before the worker or Close may see them) and
	// before connected is set; read-only after.
	id        string
	version   byte          // 4 (3.1.1) or 5
	idle      time.Duration // closed after this long without a packet
	maxOut    uint32        // the client's maximum packet size (v5), 0: none
	noProblem bool          // a v5 client asked for no reason strings
	sendMax   uint16        // unacknowledged notifications allowed

	addr      string     // the peer's address (IPv6: its /64), for preAuthPerAddress
	preAuth   bool       // counted in the broker's preAuth (guarded by b.mu)
	wmu       sync.Mutex // serialises writes; guards what follows
	connected bool       // CONNACK accepted it
	closed    bool       // no more writes
	sub       int8       // granted QoS of its subscription; -1: none
	nextID    uint16     // last packet id sent
	inflight  uint16     // notifications sent and not acknowledged
}

func newConn(b *Broker, nc net.Conn) *conn {
	c := &conn{b: b, raw: nc, nc: nc, sub: -1, addr: addressKey(nc.RemoteAddr())}
	if b.tls != nil {
		c.nc = tls.Server(nc, b.tls)
	}
	c.r = bufio.NewReaderSize(c.nc, readBufferSize)
	return c
}

// Errors that end a connection (logged at Debug).
var (
	errDisconnected = errors.New("client disconnected")
	errTooLarge     = fmt.Errorf("packet larger than %d bytes", maxPacketSize)
	errTakenOver    = errors.New("taken over by a new connection of the same device")
	errWriterBusy   = errors.New("connection busy writing (a device not reading?)")
)

// Reason codes the broker sends in a v5 DISCONNECT.
var (
	codeShuttingDown = packets.ErrServerShuttingDown                  // 0x8B
	codeTakenOver    = packets.ErrSessionTakenOver                    // 0x8E
	codeKeepalive    = packets.ErrKeepAliveTimeout                    // 0x8D
	codeMalformed    = packets.ErrMalformedPacket                     // 0x81
	codeProtocol     = packets.ErrProtocolViolation                   // 0x82
	codeTooLarge     = packets.ErrPacketTooLarge                      // 0x95
	codeQoS          = packets.ErrQosNotSupported                     // 0x9B
	codeNotAllowed   = packets.ErrNotAuthorized                       // 0x87
	codeNoSubIDs     = packets.ErrSubscriptionIdentifiersNotSupported // 0xA1
)

// header is a packet's fixed header: the first byte (type and flags) and
// the length of the rest.
type header struct {
	first byte
	size  int
}

func (h header) kind() byte { return h.first >> 4 }

// serve is the connection's reader: the CONNECT, then one packet at a
// time until the client goes, breaks the protocol, falls silent for
// longer than its keepalive, or the broker closes it.
func (c *conn) serve() {
	defer c.b.forget(c)
	defer c.shut()
	// Read and write: covers the TLS handshake as well as the CONNECT and
	// its CONNACK.
	_ = c.raw.SetDeadline(time.Now().Add(connectTimeout))
	err := c.connect()
	for err == nil {
		var h header
		h, err = c.readHeader()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = c.kick(codeKeepalive, fmt.Errorf("silent for longer than 1.5 × keepalive: %w", err))
		case err == nil:
			err = c.handle(h)
		}
	}
	c.ended(err)
}

// ended logs why the connection ended. Per connection, so Debug.
func (c *conn) ended(err error) {
	args := []any{"remote", c.raw.RemoteAddr().String(), "error", err}
	if c.id != "" {
		args = append(args, "device_id", c.id)
	}
	c.b.log.Debug("mqtt connection ended", args...)
}

// readHeader reads a fixed header, refusing packets over maxPacketSize
// before their body is read.
func (c *conn) readHeader() (header, error) {
	first, err := c.r.ReadByte()
	if err != nil {
		return header{}, err
	}
	n, lenBytes, err := packets.DecodeLength(c.r)
	var code packets.Code
	if errors.As(err, &code) {
		return header{}, c.kick(codeMalformed, err)
	}
	if err != nil {
		return header{}, err
	}
	if 1+lenBytes+n > maxPacketSize {
		return header{}, c.kick(codeTooLarge, errTooLarge)
	}
	return header{first: first, size: n}, nil
}

// readPacket reads h's body and decodes it.
func (c *conn) readPacket(h header, pk *packets.Packet) error {
	body := make([]byte, h.size)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return err
	}
	pk.ProtocolVersion = c.version
	if err := pk.FixedHeader.Decode(h.first); err != nil {
		return err
	}
	pk.FixedHeader.Remaining = h.size // the decoders read optional fields by it
	return decode(pk, body)
}

// decode decodes body into pk with mochi's codec. The codec trusts some
// lengths (a v5 SUBSCRIBE ending in a filter with no options byte is read
// past its end), so a panic is a malformed packet, not a crash.
func decode(pk *packets.Packet, body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder: %v", packets.ErrMalformedPacket, r)
		}
	}()
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectDecode(body)
	case packets.Publish:
		return pk.PublishDecode(body)
	case packets.Puback:
		return pk.PubackDecode(body)
	case packets.Subscribe:
		return pk.SubscribeDecode(body)
	case packets.Unsubscribe:
		return pk.UnsubscribeDecode(body)
	case packets.Disconnect:
		return pk.DisconnectDecode(body)
	case packets.Pingreq:
		return nil
	}
	return fmt.Errorf("%w: packet type %d not accepted from a client", packets.ErrProtocolViolation, pk.FixedHeader.Type)
}

// connect reads the CONNECT and answers it; nil means the device is
// connected and registered.
//
//go:noinline
func (c *conn) connect() error {
	h, err := c.readHeader()
	if err != nil {
		return fmt.Errorf("read CONNECT: %w", err)
	}
	if h.kind() != packets.Connect {
		return fmt.Errorf("first packet is type %d, not CONNECT", h.kind())
	}
	var pk packets.Packet
	if err := c.readPacket(h, &pk); err != nil {
		// The version may be unknown: no CONNACK.
		return fmt.Errorf("read CONNECT: %w", err)
	}
	c.version = pk.ProtocolVersion
	if c.version != 4 && c.version != 5 {
		// 3.1 and unknown versions: answered in the 3.x format, which is
		// what a client of any version can read.
		c.version = 4
		return c.refuse(&refuseVersion, "", fmt.Errorf("protocol version %d", pk.ProtocolVersion))
	}
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		// 3.1.1 has no code for a malformed CONNECT: the connection is
		// just closed [MQTT-3.1.4-1].
		if c.version == 5 {
			_ = c.sendConnack(code.Code, code.Reason, nil)
		}
		return fmt.Errorf("invalid CONNECT: %w", code)
	}
	props := &pk.Properties
	if c.version == 5 {
		c.maxOut = props.MaximumPacketSize
		c.noProblem = props.RequestProblemInfoFlag && props.RequestProblemInfo == 0
	}
	user := string(pk.Connect.Username)
	switch {
	case !pk.Connect.UsernameFlag || !pk.Connect.PasswordFlag || !protocol.ValidDeviceID(user):
		return c.refuse(&refuseCredentials, user, nil)
	case pk.Connect.ClientIdentifier != user:
		return c.refuse(&refuseClientID, user, nil)
	case pk.Connect.WillFlag:
		return c.refuse(&refuseWill, user, nil)
	case props.AuthenticationMethod != "":
		return c.refuse(&refuseAuthMethod, user, nil)
	}
	if r, err := c.b.authenticate(user, pk.Connect.Password); r != nil {
		return c.refuse(r, user, err)
	}
	c.id = user // a copy: the packet's strings point into its body

	keepalive, told := pk.Connect.Keepalive, false
	if keepalive == 0 || keepalive > c.b.maxKeepalive {
		keepalive, told = c.b.maxKeepalive, c.version == 5
	}
	c.idle = time.Duration(keepalive) * 1500 * time.Millisecond // [MQTT-3.1.2-24]
	c.sendMax = sendInflight
	if c.version == 5 && props.ReceiveMaximum > 0 {
		c.sendMax = min(c.sendMax, props.ReceiveMaximum)
	}

	old, err := c.b.register(c)
	switch {
	case errors.Is(err, errBusy):
		return c.refuse(&refuseBusy, user, nil)
	case err != nil:
		return err
	}
	if old != nil {
		// MQTT: the new connection takes over, the old one is closed
		// [MQTT-3.1.4-3]. There is no session to carry over.
		old.goodbye(codeTakenOver, time.Now().Add(writeTimeout))
		c.b.log.Debug("mqtt connection taken over", "device_id", c.id, "remote", c.raw.RemoteAddr().String())
	}

	ack := &packets.Properties{}
	if c.version == 5 {
		// What this broker does not do, so the client does not try.
		*ack = packets.Properties{
			ReceiveMaximum:           receiveMaximum,
			MaximumPacketSize:        maxPacketSize,
			MaximumQos:               1,
			MaximumQosFlag:           true,
			RetainAvailable:          0,
			RetainAvailableFlag:      true,
			WildcardSubAvailable:     0,
			WildcardSubAvailableFlag: true,
			SubIDAvailable:           0,
			SubIDAvailableFlag:       true,
			SharedSubAvailable:       0,
			SharedSubAvailableFlag:   true,
			// Topic alias maximum: absent is 0.
		}
		if props.SessionExpiryInterval > 0 {
			// No session outlives its connection.
			ack.SessionExpiryIntervalFlag = true
		}
		if told {
			ack.ServerKeepAlive, ack.ServerKeepAliveFlag = keepalive, true
		}
	}
	if err := c.sendConnack(packets.CodeSuccess.Code, "", ack); err != nil {
		return fmt.Errorf("send CONNACK: %w", err)
	}
	// From now on only the keepalive bounds reads; each write sets its own
	// deadline.
	_ = c.raw.SetDeadline(time.Time{})
	return c.raw.SetReadDeadline(time.Now().Add(c.idle))
}

// refuse answers a CONNECT with r's code, counts and logs it, and returns
// the error that ends the connection.
func (c *conn) refuse(r *refusal, user string, cause error) error {
	c.b.refused(r, user, c.raw.RemoteAddr().String(), cause)
	code := r.v3
	if c.version == 5 {
		code = r.v5
	}
	if err := c.sendConnack(code, r.reason, nil); err != nil {
		return fmt.Errorf("connection refused (%s), and the CONNACK failed: %w", r.reason, err)
	}
	if cause != nil {
		return fmt.Errorf("connection refused: %s: %w", r.reason, cause)
	}
	return fmt.Errorf("connection refused: %s", r.reason)
}

// sendConnack sends a CONNACK; a success also marks the connection
// connected, under the same lock as the write.
func (c *conn) sendConnack(code byte, reason string, props *packets.Properties) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code}
	if props != nil {
		pk.Properties = *props
	}
	if code >= 0x80 {
		pk.Properties.ReasonString = reason
	}
	buf, err := c.encode(&pk)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err = c.writeLocked(buf, time.Now().Add(writeTimeout))
	if err == nil && code == packets.CodeSuccess.Code {
		c.connected = true
	}
	return err
}

// handle reads the body of the packet h heads, and acts on it. Not on the
// reader's parked frame: see Memory above.
//
//go:noinline
func (c *conn) handle(h header) error {
	var pk packets.Packet
	if err := c.readPacket(h, &pk); err != nil {
		var code packets.Code
		if errors.As(err, &code) { // the codec's: malformed or a protocol violation
			if code.Code < 0x80 {
				code = codeMalformed
			}
			return c.kick(code, err)
		}
		return err // the connection failed
	}
	var err error
	switch pk.FixedHeader.Type {
	case packets.Pingreq:
		err = c.write(pingresp)
	case packets.Puback:
		c.acked()
	case packets.Subscribe:
		err = c.subscribe(&pk)
	case packets.Unsubscribe:
		err = c.unsubscribe(&pk)
	case packets.Publish:
		err = c.published(&pk)
	case packets.Disconnect:
		return errDisconnected
	default: // a second CONNECT: decode accepts it, the protocol does not [MQTT-3.1.0-2]
		return c.kick(codeProtocol, fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type))
	}
	if err != nil {
		return err
	}
	return c.raw.SetReadDeadline(time.Now().Add(c.idle))
}

// subscribe grants a subscription to the device's own topic, exactly, at
// QoS 0 or 1, and refuses every other filter.
func (c *conn) subscribe(pk *packets.Packet) error {
	if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
		return c.kick(codeProtocol, fmt.Errorf("invalid SUBSCRIBE: %w", code))
	}
	own := protocol.NotifyTopic(c.id)
	refused := packets.ErrUnspecifiedError.Code // 3.1.1's only failure code, 0x80
	if c.version == 5 {
		refused = codeNotAllowed.Code
	}
	grant := int8(-1)
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		switch {
		case f.Filter != own:
			codes[i] = refused
		case f.Identifier > 0:
			codes[i] = codeNoSubIDs.Code // CONNACK said so
		default:
			codes[i] = min(f.Qos, 1)
			grant = int8(codes[i])
		}
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes}
	buf, err := c.encode(&ack)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// The SUBACK goes before the first notification it enables.
	if err := c.writeLocked(buf, time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if grant >= 0 {
		c.sub = grant
	}
	return nil
}

// unsubscribe ends the device's subscription if a filter is its topic.
func (c *conn) unsubscribe(pk *packets.Packet) error {
	if code := pk.UnsubscribeValidate(); code != packets.CodeSuccess {
		return c.kick(codeProtocol, fmt.Errorf("invalid UNSUBSCRIBE: %w", code))
	}
	own := protocol.NotifyTopic(c.id)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		codes[i] = packets.CodeNoSubscriptionExisted.Code
		if f.Filter == own && c.sub >= 0 {
			codes[i] = packets.CodeSuccess.Code
			c.sub = -1
		}
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes}
	buf, err := c.encode(&ack)
	if err != nil {
		return err
	}
	return c.writeLocked(buf, time.Now().Add(writeTimeout))
}

// published answers a device's PUBLISH, which is never forwarded: at QoS
// 0 silently; at QoS 1 a v5 client gets PUBACK 0x87 (not authorized) and
// a 3.1.1 client, which cannot be told, is disconnected: a device that
// publishes is misbehaving. QoS 2 breaks the maximum QoS CONNACK gave.
func (c *conn) published(pk *packets.Packet) error {
	switch {
	case pk.FixedHeader.Qos == 0:
		return nil
	case pk.FixedHeader.Qos == 2 || c.version != 5:
		return c.kick(codeQoS, fmt.Errorf("PUBLISH at QoS %d refused", pk.FixedHeader.Qos))
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ReasonCode: codeNotAllowed.Code}
	buf, err := c.encode(&ack)
	if err != nil {
		return err
	}
	return c.write(buf)
}

// acked counts a PUBACK for one of our notifications.
func (c *conn) acked() {
	c.wmu.Lock()
	if c.inflight > 0 {
		c.inflight--
	}
	c.wmu.Unlock()
}

// errBacklog is why a notification is not sent to a device that has not
// acknowledged the previous ones.
var errBacklog = errors.New("too many notifications unacknowledged")

// notify writes a notification to the device if it is subscribed, and
// says whether it did. QoS 1 is not retransmitted: sessions end with the
// connection, and the device's timer covers a notification that is lost.
func (c *conn) notify(payload []byte) (bool, error) {
	// The one notification worker must not wait on a connection: its
	// reader holds wmu while it answers the device, and a device that
	// stops reading can make that answer block for writeTimeout. So the
	// lock is tried a few times, and the write itself gets a short
	// deadline: a notification is a few dozen bytes, which a reading
	// device's socket takes at once.
	locked := c.wmu.TryLock()
	for try := 0; !locked && try < notifyLockTries; try++ {
		time.Sleep(time.Millisecond)
		locked = c.wmu.TryLock()
	}
	if !locked {
		return false, errWriterBusy
	}
	defer c.wmu.Unlock()
	if c.closed || c.sub < 0 {
		return false, nil
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: byte(c.sub)},
		TopicName:   protocol.NotifyTopic(c.id),
		Payload:     payload,
	}
	if pk.FixedHeader.Qos > 0 {
		if c.inflight >= c.sendMax {
			return false, errBacklog
		}
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1 // 0 is not a packet id
		}
		pk.PacketID = c.nextID
	}
	buf, err := c.encode(&pk)
	if err != nil {
		return false, err
	}
	if err := c.writeLocked(buf, time.Now().Add(notifyWriteTimeout)); err != nil {
		return false, err
	}
	if pk.FixedHeader.Qos > 0 {
		c.inflight++
	}
	return true, nil
}

// kick ends the connection for err, telling a v5 client why with a
// DISCONNECT (3.1.1 has no way to be told), and returns err.
func (c *conn) kick(code packets.Code, err error) error {
	c.goodbye(code, time.Now().Add(writeTimeout))
	return err
}

// goodbye closes the connection, after a DISCONNECT with code if it is a
// connected v5 client, written by deadline. Not inlined: it is called
// from the reader's loop (by kick), whose frame must stay small.
//
//go:noinline
func (c *conn) goodbye(code packets.Code, deadline time.Time) {
	c.wmu.Lock()
	if !c.closed && c.connected && c.version == 5 {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: code.Code}
		pk.Properties.ReasonString = code.Reason
		if buf, err := c.encode(&pk); err == nil {
			_ = c.writeLocked(buf, deadline)
		}
	}
	c.closed = true
	c.wmu.Unlock()
	c.raw.Close()
}

// shut closes the connection without a word.
func (c *conn) shut() {
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	c.raw.Close()
}

// write writes one whole packet.
func (c *conn) write(buf []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(buf, time.Now().Add(writeTimeout))
}

// writeLocked writes one whole packet by deadline. A failed write may
// have sent part of it, so it closes the connection; its reader sees that
// and ends.
func (c *conn) writeLocked(buf []byte, deadline time.Time) error {
	if c.closed {
		return net.ErrClosed
	}
	_ = c.nc.SetWriteDeadline(deadline)
	if _, err := c.nc.Write(buf); err != nil {
		c.closed = true
		c.raw.Close()
		return fmt.Errorf("write %s: %w", packets.PacketNames[buf[0]>>4], err)
	}
	return nil
}

// encode encodes pk for this connection's protocol version and limits.
func (c *conn) encode(pk *packets.Packet) ([]byte, error) {
	pk.ProtocolVersion = c.version
	pk.Mods.MaxSize = c.maxOut // reason strings are left out to fit
	pk.Mods.DisallowProblemInfo = c.noProblem
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	if c.maxOut > 0 && uint32(buf.Len()) > c.maxOut {
		return nil, fmt.Errorf("encode %s: %d bytes, over the client's maximum of %d", packets.PacketNames[pk.FixedHeader.Type], buf.Len(), c.maxOut)
	}
	return buf.Bytes(), nil
}

// pingresp is the whole PINGRESP packet, the same in every version.
var pingresp = func() []byte {
	var buf bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}
	if err := pk.PingrespEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}()

// addressKey is the address a connection counts against: its IP, or for
// IPv6 its /64 (one host usually has a whole /64).
func addressKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
