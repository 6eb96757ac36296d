package mqtt

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient is a minimal MQTT client over a net.Conn, built on mochi's
// packet codec: light enough for 10,000 at once, and able to send what a
// well-behaved client library would not (wills, publishes, wildcards).
type rawClient struct {
	c net.Conn
	r *bufio.Reader
	v byte // protocol version: 4 (3.1.1) or 5
}

func dialRaw(addr string, tlsConf *tls.Config, v byte) (*rawClient, error) {
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsConf)
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		return nil, err
	}
	return &rawClient{c: c, r: bufio.NewReaderSize(c, 256), v: v}, nil
}

func (rc *rawClient) Close() error { return rc.c.Close() }

func (rc *rawClient) write(pk packets.Packet) error {
	pk.ProtocolVersion = rc.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("test client cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	_ = rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = rc.c.Write(buf.Bytes())
	return err
}

// read reads the next packet, waiting at most d.
func (rc *rawClient) read(d time.Duration) (packets.Packet, error) {
	var pk packets.Packet
	pk.ProtocolVersion = rc.v
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	b, err := rc.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n // the decoders read optional fields by it
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("test client cannot read packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func connectPacket(id, user string, password []byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ClientIdentifier: id,
			Username:         []byte(user),
			UsernameFlag:     user != "",
			Password:         password,
			PasswordFlag:     password != nil,
			Clean:            true,
			Keepalive:        60,
		},
	}
}

// connect sends CONNECT and returns the CONNACK's reason code.
func (rc *rawClient) connect(pk packets.Packet) (byte, error) {
	if err := rc.write(pk); err != nil {
		return 0, fmt.Errorf("send CONNECT: %w", err)
	}
	ack, err := rc.read(5 * time.Second)
	if err != nil {
		return 0, fmt.Errorf("read CONNACK: %w", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		return 0, fmt.Errorf("got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack.ReasonCode, nil
}

// subscribe subscribes at QoS 1 and returns the SUBACK's codes.
func (rc *rawClient) subscribe(packetID uint16, filters ...string) ([]byte, error) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: packetID}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	if err := rc.write(pk); err != nil {
		return nil, fmt.Errorf("send SUBSCRIBE: %w", err)
	}
	ack, err := rc.read(5 * time.Second)
	if err != nil {
		return nil, fmt.Errorf("read SUBACK: %w", err)
	}
	if ack.FixedHeader.Type != packets.Suback || ack.PacketID != packetID {
		return nil, fmt.Errorf("got packet type %d id %d, want SUBACK %d", ack.FixedHeader.Type, ack.PacketID, packetID)
	}
	return ack.ReasonCodes, nil
}

// ping round-trips a PINGREQ: every packet sent before it has been
// processed by the broker once it returns.
func (rc *rawClient) ping() error {
	if err := rc.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}); err != nil {
		return err
	}
	pk, err := rc.read(5 * time.Second)
	if err != nil {
		return err
	}
	if pk.FixedHeader.Type != packets.Pingresp {
		return fmt.Errorf("got packet type %d, want PINGRESP", pk.FixedHeader.Type)
	}
	return nil
}

// nextPublish reads until a PUBLISH, acknowledging it if QoS 1.
func (rc *rawClient) nextPublish(d time.Duration) (packets.Packet, error) {
	for {
		pk, err := rc.read(d)
		if err != nil {
			return pk, err
		}
		if pk.FixedHeader.Type != packets.Publish {
			return pk, fmt.Errorf("got packet type %d, want PUBLISH", pk.FixedHeader.Type)
		}
		if pk.FixedHeader.Qos > 0 {
			err = rc.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		return pk, err
	}
}
