//! The process a simulated PLC controls: a tank filled by a pump and drained by a valve, with
//! the pump switched on at a low level and off at a high level (the two setpoints). Levels move
//! slowly and plausibly, so an HMI polling it shows a living process, and a setpoint written out
//! of range has a visible effect (the tank overflows).

/// The tank's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Tank {
    /// Level, in millimetres (0-1000 is the vessel; above is an overflow).
    pub level: f64,
    /// Whether the pump runs.
    pub pump: bool,
    /// Whether the controller switches the pump by itself (automatic mode).
    pub auto: bool,
    /// Whether the drain valve is open.
    pub drain: bool,
    /// The pump stops at this level (holding register 0).
    pub high_setpoint: u16,
    /// The pump starts at this level (holding register 1).
    pub low_setpoint: u16,
    /// Pump speed in percent (holding register 2).
    pub pump_speed: u16,
    /// Liquid temperature, tenths of a degree.
    pub temperature: f64,
}

impl Default for Tank {
    fn default() -> Self {
        Self {
            level: 500.0,
            pump: true,
            auto: true,
            drain: true,
            high_setpoint: 800,
            low_setpoint: 200,
            pump_speed: 60,
            temperature: 215.0,
        }
    }
}

/// Millimetres per second the pump adds at full speed.
const PUMP_RATE: f64 = 40.0;
/// Millimetres per second the open drain takes away.
const DRAIN_RATE: f64 = 15.0;

impl Tank {
    /// Inflow now, millimetres per second.
    pub fn inflow(&self) -> f64 {
        if self.pump {
            PUMP_RATE * f64::from(self.pump_speed.min(100)) / 100.0
        } else {
            0.0
        }
    }

    /// Outflow now, millimetres per second.
    pub fn outflow(&self) -> f64 {
        if self.drain && self.level > 0.0 {
            DRAIN_RATE
        } else {
            0.0
        }
    }

    /// Advances the process by `seconds`.
    pub fn step(&mut self, seconds: f64) {
        self.level = (self.level + (self.inflow() - self.outflow()) * seconds).clamp(0.0, 1200.0);
        if self.auto {
            if self.level >= f64::from(self.high_setpoint) {
                self.pump = false;
            } else if self.level <= f64::from(self.low_setpoint) {
                self.pump = true;
            }
        }
        // The pump warms the liquid a little; it cools back towards 20 degrees.
        let target = if self.pump { 240.0 } else { 200.0 };
        self.temperature += (target - self.temperature) * (seconds / 60.0).min(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_automatic_mode_the_level_cycles_between_the_setpoints() {
        let mut tank = Tank::default();
        let (mut low, mut high) = (f64::MAX, f64::MIN);
        for _ in 0..20_000 {
            tank.step(0.1);
            low = low.min(tank.level);
            high = high.max(tank.level);
        }
        assert!((190.0..=260.0).contains(&low), "low {low}");
        assert!((780.0..=810.0).contains(&high), "high {high}");
    }

    #[test]
    fn a_high_setpoint_beyond_the_vessel_overflows_it() {
        let mut tank = Tank {
            high_setpoint: 5000,
            ..Tank::default()
        };
        for _ in 0..1000 {
            tank.step(0.1);
        }
        assert!(tank.level > 1000.0, "{}", tank.level);
    }
}
