package loadgen

import (
	"sync"

	"github.com/ecowatt/fota/agent"
)

// memSlots is agent.Slots for a load device: a running image in slot 0,
// writes to slot 1 counted and dropped (the agent hashes what it writes, so
// the firmware is still fully checked), NVS in memory.
type memSlots struct {
	mu      sync.Mutex
	running agent.Image
	pending *agent.Image
	written int64
	nvs     map[string][]byte
}

var _ agent.Slots = (*memSlots)(nil)

func newMemSlots(version string) *memSlots {
	return &memSlots{running: agent.Image{Version: version, Size: 1}, nvs: map[string][]byte{}}
}

func (m *memSlots) Boot() (agent.BootInfo, error) {
	return agent.BootInfo{Slot: 0, Image: m.running}, nil
}

func (m *memSlots) Status() (agent.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := agent.Status{Running: 0, Next: 0}
	st.Slots[0] = agent.SlotStatus{State: agent.ImageValid, Image: m.running}
	st.Slots[1] = agent.SlotStatus{State: agent.ImageEmpty}
	if m.pending != nil {
		st.Slots[1] = agent.SlotStatus{State: agent.ImageNew, Image: *m.pending}
	}
	return st, nil
}

func (m *memSlots) SlotSize() int64 { return 1 << 30 }

func (m *memSlots) Erase(slot int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending, m.written = nil, 0
	return agent.CheckSlot(slot)
}

func (m *memSlots) WriteAt(slot int, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.written += int64(len(p))
	return nil
}

func (m *memSlots) ReadAt(slot int, p []byte, off int64) (int, error) { return 0, nil }
func (m *memSlots) Sync(slot int) error                               { return nil }

func (m *memSlots) SetPending(slot int, img agent.Image) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = &img
	return nil
}

func (m *memSlots) Confirm() error      { return nil }
func (m *memSlots) Reject(string) error { return nil }
func (m *memSlots) AckRollback() error  { return nil }

// SecurityCounter is 0: a load device confirms nothing (Confirm above), so
// its counter never rises.
func (m *memSlots) SecurityCounter() (uint32, error) { return 0, nil }

func (m *memSlots) LoadNVS(key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nvs[key]
	if !ok {
		return nil, agent.ErrNoValue
	}
	return append([]byte(nil), v...), nil
}

func (m *memSlots) SaveNVS(key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nvs[key] = append([]byte(nil), value...)
	return nil
}

func (m *memSlots) DeleteNVS(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nvs, key)
	return nil
}
