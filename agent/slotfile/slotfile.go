// Package slotfile implements agent.Slots on files: two slot files, two
// copies of the boot state (otadata) written alternately, each replaced
// atomically and carrying its SHA-256, the security counter in a record of
// its own that only rises (counter.go), and an NVS of small atomic records.
// It simulates an ESP32's flash for the simulated device, and serves a
// Linux gateway as its real A/B store. Wrapped in FaultDisk it cuts power
// at any persistent operation, for tests.
package slotfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"

	"github.com/ecowatt/fota/agent"
)

// DefaultMaxBoots is how many times a new image may boot without confirming
// itself before the boot step rolls back.
const DefaultMaxBoots = 3

// record is the boot state. Seq orders the two copies.
type record struct {
	Seq      uint64              `json:"seq"`
	Slots    [2]agent.SlotStatus `json:"slots"`
	Next     int                 `json:"next"`
	Attempts int                 `json:"attempts"`
	// LegacyCounter is where devices formatted before the counter had its
	// own record kept it. Nothing sets it any more; the boot step moves it
	// into the counter record.
	LegacyCounter uint32          `json:"security_counter,omitempty"`
	Rollback      *agent.Rollback `json:"rollback,omitempty"`
	Rejected      []string        `json:"rejected,omitempty"`
}

// maxRejected bounds the list of versions a device refused.
const maxRejected = 16

// Slots is agent.Slots on a Disk.
type Slots struct {
	disk     Disk
	size     int64
	maxBoots int

	mu      sync.Mutex
	rec     record
	counter counterState
	running int // -1 until Boot
}

var _ agent.Slots = (*Slots)(nil)

func slotFile(slot int) string { return fmt.Sprintf("slot%d.bin", slot) }

// Format prepares an empty device: slot 0 holds the factory image, valid.
// It refuses a disk that has boot state already. A security counter the
// disk holds (a device whose boot state was lost) is kept: it rises to the
// factory image's counter if that is higher, and is never lowered. A
// counter that cannot be read stays unreadable, and the device refuses
// updates, rather than restart from the factory image's counter.
func Format(disk Disk, slotSize int64, factory []byte, img agent.Image) error {
	if _, err := loadRecord(disk); err == nil {
		return errors.New("device storage is formatted already")
	}
	if int64(len(factory)) > slotSize {
		return fmt.Errorf("factory image: %w", agent.ErrImageTooLarge)
	}
	if img.Size != int64(len(factory)) || img.SHA256 != sha256.Sum256(factory) {
		return errors.New("factory image does not match its description")
	}
	for slot := range 2 {
		if err := disk.Truncate(slotFile(slot), 0); err != nil {
			return err
		}
	}
	if err := disk.WriteAt(slotFile(0), factory, 0); err != nil {
		return err
	}
	if err := disk.Sync(slotFile(0)); err != nil {
		return err
	}
	// Before the boot state: once that is written the device counts as
	// formatted, and its counter must already cover the factory image.
	if cur := readCounter(disk); cur.err == nil {
		if _, err := raiseCounter(disk, cur, img.SecurityCounter); err != nil {
			return err
		}
	}
	rec := record{Seq: 0, Next: 0}
	rec.Slots[0] = agent.SlotStatus{State: agent.ImageValid, Image: img}
	rec.Slots[1] = agent.SlotStatus{State: agent.ImageEmpty}
	// Both copies from the start: damage to either one is survivable even
	// before the first update writes the second.
	for seq := range uint64(2) {
		rec.Seq = seq
		if err := saveRecord(disk, &rec); err != nil {
			return err
		}
	}
	return nil
}

// Formatted reports whether the disk holds boot state.
func Formatted(disk Disk) bool {
	_, err := loadRecord(disk)
	return err == nil
}

// Open reads the boot state from disk. Call Boot next.
func Open(disk Disk, slotSize int64, maxBoots int) (*Slots, error) {
	if maxBoots <= 0 {
		maxBoots = DefaultMaxBoots
	}
	rec, err := loadRecord(disk)
	if err != nil {
		return nil, err
	}
	// An unreadable counter does not stop the device from booting its
	// image: it only stops updates (SecurityCounter returns the error).
	return &Slots{disk: disk, size: slotSize, maxBoots: maxBoots, rec: rec, counter: readCounter(disk), running: -1}, nil
}

// seal appends a newline and the body's SHA-256 in hex.
func seal(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append(append(body, '\n'), hex.EncodeToString(sum[:])...)
}

// unseal returns the body of a sealed record whose checksum matches.
func unseal(data []byte) ([]byte, error) {
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		return nil, errors.New("no checksum")
	}
	body, sum := data[:i], string(data[i+1:])
	want := sha256.Sum256(body)
	if sum != hex.EncodeToString(want[:]) {
		return nil, errors.New("checksum mismatch")
	}
	return body, nil
}

func encodeRecord(rec *record) []byte {
	body, _ := json.Marshal(rec)
	return seal(body)
}

func decodeRecord(data []byte) (record, error) {
	body, err := unseal(data)
	if err != nil {
		return record{}, err
	}
	var rec record
	if err := json.Unmarshal(body, &rec); err != nil {
		return record{}, err
	}
	if agent.CheckSlot(rec.Next) != nil {
		return record{}, errors.New("bad next slot")
	}
	return rec, nil
}

// loadRecord returns the valid copy with the highest sequence number.
func loadRecord(disk Disk) (record, error) {
	var best record
	found := false
	var problems []string
	for i := range 2 {
		name := fmt.Sprintf("otadata.%d", i)
		data, err := disk.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return record{}, fmt.Errorf("read %s: %w", name, err)
		}
		rec, err := decodeRecord(data)
		if err != nil {
			problems = append(problems, name+": "+err.Error())
			continue
		}
		if !found || rec.Seq > best.Seq {
			best, found = rec, true
		}
	}
	if !found {
		if len(problems) > 0 {
			return record{}, fmt.Errorf("%w: boot state unreadable (%s)", agent.ErrNoBootable, strings.Join(problems, "; "))
		}
		return record{}, fmt.Errorf("%w: device storage is not formatted", agent.ErrNoBootable)
	}
	return best, nil
}

// saveRecord writes the next sequence number into the older copy, so the
// newer one survives whatever happens to this write.
func saveRecord(disk Disk, rec *record) error {
	return replaceFile(disk, fmt.Sprintf("otadata.%d", rec.Seq%2), encodeRecord(rec))
}

// save persists a changed record; on failure the in-memory state goes back
// to what is on disk.
func (s *Slots) save(rec record) error {
	rec.Seq = s.rec.Seq + 1
	if err := saveRecord(s.disk, &rec); err != nil {
		return fmt.Errorf("save boot state: %w", err)
	}
	s.rec = rec
	return nil
}

func cloneRecord(r record) record {
	r.Rejected = slices.Clone(r.Rejected)
	if r.Rollback != nil {
		rb := *r.Rollback
		r.Rollback = &rb
	}
	return r
}

// SlotSize is each slot's capacity.
func (s *Slots) SlotSize() int64 { return s.size }

// freeSpacer is a Disk that knows how much room is left on it (OSDisk).
type freeSpacer interface {
	Free() (int64, error)
}

var _ agent.FreeFlashReporter = (*Slots)(nil)

// FreeFlash is the free space of the storage under the slots, where its
// Disk can tell (errors.ErrUnsupported where not), for the inventory the
// agent sends. Slot files grow as they are written, so space a slot will
// take counts as free until then.
func (s *Slots) FreeFlash() (int64, error) {
	if f, ok := s.disk.(freeSpacer); ok {
		return f.Free()
	}
	return 0, errors.ErrUnsupported
}

// verify checks a slot's content against its image's size and SHA-256.
func (s *Slots) verify(slot int, img agent.Image) bool {
	if img.Size <= 0 || img.Size > s.size {
		return false
	}
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var off int64
	for off < img.Size {
		n := int(min(int64(len(buf)), img.Size-off))
		if _, err := s.disk.ReadAt(slotFile(slot), buf[:n], off); err != nil {
			return false
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	return bytes.Equal(h.Sum(nil), img.SHA256[:])
}

// Boot picks the slot to run, as a bootloader with rollback does.
func (s *Slots) Boot() (agent.BootInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := cloneRecord(s.rec)
	order := []int{rec.Next, agent.Other(rec.Next)}
	for i, slot := range order {
		st := &rec.Slots[slot]
		switch st.State {
		case agent.ImageValid:
			if !s.verify(slot, st.Image) {
				st.State = agent.ImageAborted
				rec.Rollback = &agent.Rollback{Version: st.Image.Version, Reason: "valid image found damaged at boot"}
				continue
			}
			rec.Next, rec.Attempts = slot, 0
			if err := s.save(rec); err != nil {
				return agent.BootInfo{}, err
			}
			// As ESP-IDF's bootloader burns the secure_version of a valid
			// app it boots: this finishes a confirm that was cut between
			// marking the image valid and raising the counter, repairs a
			// damaged copy, and moves a legacy counter into the record.
			if err := s.raise(max(st.Image.SecurityCounter, rec.LegacyCounter)); err != nil {
				return agent.BootInfo{}, err
			}
			s.running = slot
			return s.bootInfo(false), nil
		case agent.ImageNew, agent.ImagePendingVerify:
			if i > 0 {
				continue // only the slot chosen to boot next is ever on trial
			}
			if st.State == agent.ImageNew {
				rec.Attempts = 0
			}
			rec.Attempts++
			if rec.Attempts > s.maxBoots {
				st.State = agent.ImageInvalid
				rec.Rollback = &agent.Rollback{Version: st.Image.Version, Reason: fmt.Sprintf("not confirmed within %d boots", s.maxBoots)}
				rec.Rejected = addRejected(rec.Rejected, st.Image.Version)
				rec.Attempts = 0
				continue
			}
			if !s.verify(slot, st.Image) {
				st.State = agent.ImageAborted
				rec.Rollback = &agent.Rollback{Version: st.Image.Version, Reason: "new image found damaged at boot"}
				rec.Attempts = 0
				continue
			}
			st.State = agent.ImagePendingVerify
			rec.Next = slot
			if err := s.save(rec); err != nil {
				return agent.BootInfo{}, err
			}
			s.running = slot
			return s.bootInfo(true), nil
		}
	}
	return agent.BootInfo{}, fmt.Errorf("%w: slot 0 is %s, slot 1 is %s", agent.ErrNoBootable, rec.Slots[0].State, rec.Slots[1].State)
}

func (s *Slots) bootInfo(trial bool) agent.BootInfo {
	bi := agent.BootInfo{Slot: s.running, Image: s.rec.Slots[s.running].Image, Trial: trial, Attempts: s.rec.Attempts}
	if s.rec.Rollback != nil {
		rb := *s.rec.Rollback
		bi.Rollback = &rb
	}
	return bi
}

func addRejected(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	list = append(list, v)
	if len(list) > maxRejected {
		list = list[len(list)-maxRejected:]
	}
	return list
}

// Status returns the boot state.
func (s *Slots) Status() (agent.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return agent.Status{Slots: s.rec.Slots, Running: s.running, Next: s.rec.Next, Rejected: slices.Clone(s.rec.Rejected)}, nil
}

// SecurityCounter returns the stored anti-rollback counter, or
// agent.ErrCounterUnreadable when no copy of its record is intact.
func (s *Slots) SecurityCounter() (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counter.err != nil {
		return 0, s.counter.err
	}
	return s.counter.value, nil
}

// raise makes the stored counter at least v. Called locked. An unreadable
// counter is left as it is: the device still boots, and refuses updates.
func (s *Slots) raise(v uint32) error {
	if s.counter.err != nil {
		return nil
	}
	next, err := raiseCounter(s.disk, s.counter, v)
	if err != nil {
		return err
	}
	s.counter = next
	return nil
}

func (s *Slots) writable(slot int) error {
	if err := agent.CheckSlot(slot); err != nil {
		return err
	}
	if s.running < 0 {
		return errors.New("slots used before Boot")
	}
	if slot == s.running {
		return agent.ErrRunningSlot
	}
	return nil
}

// Erase empties the inactive slot. The boot state says "empty" before the
// content is touched, so a cut mid-erase never leaves a bootable half image.
func (s *Slots) Erase(slot int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(slot); err != nil {
		return err
	}
	if s.rec.Slots[slot].State != agent.ImageEmpty || s.rec.Next == slot {
		rec := cloneRecord(s.rec)
		rec.Slots[slot] = agent.SlotStatus{State: agent.ImageEmpty}
		rec.Next = s.running
		if err := s.save(rec); err != nil {
			return err
		}
	}
	return s.disk.Truncate(slotFile(slot), 0)
}

// WriteAt writes to the inactive slot, which must have been erased.
func (s *Slots) WriteAt(slot int, p []byte, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(slot); err != nil {
		return err
	}
	if s.rec.Slots[slot].State != agent.ImageEmpty {
		return fmt.Errorf("slot %d holds a %s image; erase it first", slot, s.rec.Slots[slot].State)
	}
	if off < 0 || off+int64(len(p)) > s.size {
		return fmt.Errorf("write at %d+%d: %w (%d bytes)", off, len(p), agent.ErrImageTooLarge, s.size)
	}
	return s.disk.WriteAt(slotFile(slot), p, off)
}

// ReadAt reads from a slot.
func (s *Slots) ReadAt(slot int, p []byte, off int64) (int, error) {
	if err := agent.CheckSlot(slot); err != nil {
		return 0, err
	}
	return s.disk.ReadAt(slotFile(slot), p, off)
}

// Sync makes a slot's writes durable.
func (s *Slots) Sync(slot int) error {
	if err := agent.CheckSlot(slot); err != nil {
		return err
	}
	return s.disk.Sync(slotFile(slot))
}

// SetPending marks the written inactive slot to boot next, on trial.
func (s *Slots) SetPending(slot int, img agent.Image) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(slot); err != nil {
		return err
	}
	if s.rec.Slots[slot].State != agent.ImageEmpty {
		return fmt.Errorf("slot %d holds a %s image, not a fresh write", slot, s.rec.Slots[slot].State)
	}
	if img.Size > s.size {
		return agent.ErrImageTooLarge
	}
	rec := cloneRecord(s.rec)
	rec.Slots[slot] = agent.SlotStatus{State: agent.ImageNew, Image: img}
	rec.Next, rec.Attempts = slot, 0
	return s.save(rec)
}

// Confirm makes the running trial image valid and raises the counter.
func (s *Slots) Confirm() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running < 0 || s.rec.Slots[s.running].State != agent.ImagePendingVerify {
		return agent.ErrNotOnTrial
	}
	rec := cloneRecord(s.rec)
	st := &rec.Slots[s.running]
	st.State = agent.ImageValid
	rec.Attempts = 0
	// Valid first, counter second: a cut in between leaves a valid image
	// whose counter the next boot raises, never a counter raised for an
	// image that may still roll back.
	if err := s.save(rec); err != nil {
		return err
	}
	if err := s.raise(st.Image.SecurityCounter); err != nil {
		return fmt.Errorf("image confirmed, but its security counter is not stored yet (the next boot stores it): %w", err)
	}
	return nil
}

// Reject marks the running trial image invalid; the next boot rolls back.
func (s *Slots) Reject(reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running < 0 || s.rec.Slots[s.running].State != agent.ImagePendingVerify {
		return agent.ErrNotOnTrial
	}
	rec := cloneRecord(s.rec)
	st := &rec.Slots[s.running]
	st.State = agent.ImageInvalid
	rec.Rollback = &agent.Rollback{Version: st.Image.Version, Reason: reason}
	rec.Rejected = addRejected(rec.Rejected, st.Image.Version)
	rec.Next, rec.Attempts = agent.Other(s.running), 0
	return s.save(rec)
}

// AckRollback forgets the recorded rollback.
func (s *Slots) AckRollback() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.Rollback == nil {
		return nil
	}
	rec := cloneRecord(s.rec)
	rec.Rollback = nil
	return s.save(rec)
}

func nvsName(key string) (string, error) {
	if key == "" || len(key) > 32 {
		return "", fmt.Errorf("NVS key %q: 1-32 characters", key)
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", fmt.Errorf("NVS key %q: use a-z 0-9 _ -", key)
		}
	}
	return "nvs." + key, nil
}

// LoadNVS returns a stored value; a torn or corrupted one reads as absent.
func (s *Slots) LoadNVS(key string) ([]byte, error) {
	name, err := nvsName(key)
	if err != nil {
		return nil, err
	}
	data, err := s.disk.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, agent.ErrNoValue
	}
	if err != nil {
		return nil, err
	}
	if len(data) < sha256.Size {
		return nil, fmt.Errorf("%w: %s is corrupt", agent.ErrNoValue, key)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(want[:], sum) {
		return nil, fmt.Errorf("%w: %s is corrupt", agent.ErrNoValue, key)
	}
	return body, nil
}

// SaveNVS stores a value atomically, with its checksum.
func (s *Slots) SaveNVS(key string, value []byte) error {
	name, err := nvsName(key)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(value)
	return replaceFile(s.disk, name, append(append([]byte(nil), value...), sum[:]...))
}

// DeleteNVS removes a value.
func (s *Slots) DeleteNVS(key string) error {
	name, err := nvsName(key)
	if err != nil {
		return err
	}
	if err := s.disk.Remove(name); err != nil {
		return err
	}
	return s.disk.SyncDir()
}
