//! The domain types: a plain-Rust mirror of `wit/insurance/types.wit`.

/// What is insured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Motor,
    Home,
    Life,
}

impl Line {
    /// The name used in config keys (`motor.base`).
    pub fn name(self) -> &'static str {
        match self {
            Line::Motor => "motor",
            Line::Home => "home",
            Line::Life => "life",
        }
    }
}

/// Optional extras a policy can carry: the WIT `coverage` flags, with the
/// same bit order (collision is bit 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage(u8);

impl Coverage {
    pub const COLLISION: Coverage = Coverage(1);
    pub const THEFT: Coverage = Coverage(1 << 1);
    pub const GLASS: Coverage = Coverage(1 << 2);
    pub const ROADSIDE: Coverage = Coverage(1 << 3);
    pub const FLOOD: Coverage = Coverage(1 << 4);

    /// Every extra with its name, in bit order.
    pub const NAMED: [(Coverage, &'static str); 5] = [
        (Coverage::COLLISION, "collision"),
        (Coverage::THEFT, "theft"),
        (Coverage::GLASS, "glass"),
        (Coverage::ROADSIDE, "roadside"),
        (Coverage::FLOOD, "flood"),
    ];

    /// No extras.
    pub const fn empty() -> Coverage {
        Coverage(0)
    }

    /// The flags from their bits; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Coverage {
        Coverage(bits & 0b1_1111)
    }

    /// The flags as bits, for the WIT flags type.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Coverage) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The name of a single flag, `extra` for anything else.
    pub fn name(self) -> &'static str {
        Coverage::NAMED
            .iter()
            .find(|(flag, _)| *flag == self)
            .map_or("extra", |(_, name)| name)
    }
}

impl std::ops::BitOr for Coverage {
    type Output = Coverage;
    fn bitor(self, rhs: Coverage) -> Coverage {
        Coverage(self.0 | rhs.0)
    }
}

impl std::ops::Sub for Coverage {
    type Output = Coverage;
    fn sub(self, rhs: Coverage) -> Coverage {
        Coverage(self.0 & !rhs.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VehicleKind {
    Car,
    Motorcycle,
    Van,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vehicle {
    pub kind: VehicleKind,
    /// Model year.
    pub year: u16,
    /// Market value in cents.
    pub value_cents: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dwelling {
    pub square_meters: f32,
    pub postcode: String,
    /// Floors above ground; negative for basements.
    pub floor: i8,
}

/// The insured subject: one case per line of business.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    Vehicle(Vehicle),
    Dwelling(Dwelling),
    /// Age of the insured life, in years.
    Person(u8),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Driver {
    pub name: String,
    pub age: u8,
    /// Past claims as (year, amount in euros).
    pub claims: Vec<(u16, f64)>,
    /// Bonus-malus class: negative is a malus.
    pub bonus_malus: i16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub id: u64,
    pub holder: String,
    /// One-letter region code.
    pub region: char,
    pub subject: Subject,
    pub coverage: Coverage,
    /// Deductible in euros; none means the product default.
    pub deductible: Option<u32>,
    pub drivers: Vec<Driver>,
    /// Days since 1970-01-01 the cover starts.
    pub start_day: i32,
    pub discount_code: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Risk {
    Low,
    Medium,
    High,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Quote {
    pub policy_id: u64,
    /// Yearly premium.
    pub premium: f64,
    pub currency: String,
    /// Named components of the premium, in the order they were applied.
    pub breakdown: Vec<(String, f64)>,
    pub risk: Risk,
    pub valid_days: u16,
    /// The policy id mixed with the start day.
    pub reference: i64,
    pub warnings: Vec<String>,
}

/// Why a policy could not be rated.
#[derive(Clone, Debug, PartialEq)]
pub enum RatingError {
    /// The policy is inconsistent; the payload says why.
    Invalid(String),
    /// The product does not offer these extras for this line.
    UnsupportedCoverage(Coverage),
    /// The risk is not insurable.
    Declined(Risk, String),
}

/// A price table for one line.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceTable {
    pub base: f64,
    /// Loading per extra, as a fraction of the base (0.1 = +10%).
    pub loadings: Vec<(Coverage, f32)>,
    pub currency: String,
}
