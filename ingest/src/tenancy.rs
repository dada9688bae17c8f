//! Which locations and state each license has (the operator's locations.csv). A line must
//! name its own: otherwise a sender could pick another location's business hours or another
//! state's policy for its events. Lines that do not are dead-lettered (`location_mismatch`).

use std::collections::HashMap;

/// Locations and states by license.
#[derive(Debug, Default, Clone)]
pub struct Tenancy {
    /// location → (license, state).
    by_location: HashMap<String, (String, String)>,
    /// license → state.
    license_state: HashMap<String, String>,
}

impl Tenancy {
    /// From `(location, license, state)` rows.
    pub fn new<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut tenancy = Self::default();
        for (location, license, state) in rows {
            tenancy.by_location.insert(location.to_string(), (license.to_string(), state.to_string()));
            tenancy.license_state.insert(license.to_string(), state.to_string());
        }
        tenancy
    }

    /// Whether `license` is one of the operator's.
    pub fn knows_license(&self, license: &str) -> bool {
        self.license_state.contains_key(license)
    }

    /// The license of `location`, if it is one of the operator's.
    pub fn license_of(&self, location: &str) -> Option<&str> {
        self.by_location.get(location).map(|(license, _)| license.as_str())
    }

    /// Why a line with these values names another tenant's location or state, if it does. A
    /// line of a license and location the file does not know passes (its own metric bucket,
    /// the defaults of its state); a line whose location is left out names its license.
    pub fn check(&self, license: &str, location: &str, state: &str) -> Result<(), &'static str> {
        if let Some((owner, location_state)) = self.by_location.get(location) {
            if owner != license {
                return Err("field `location` names a location of another license (locations.csv)");
            }
            if location_state != state {
                return Err("field `state` is not the state of the line's location (locations.csv)");
            }
            return Ok(());
        }
        match self.license_state.get(license) {
            Some(_) if location != license => Err("field `location` is not one of the license's locations (locations.csv)"),
            Some(license_state) if license_state != state => Err("field `state` is not the state of the line's license (locations.csv)"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_own_location_and_state_or_says_which_is_not() {
        let t = Tenancy::new([("oakland", "C10-1", "CA"), ("sf", "C10-1", "CA"), ("denver", "402R-2", "CO")]);
        assert_eq!(t.check("C10-1", "oakland", "CA"), Ok(()));
        assert_eq!(t.check("C10-1", "sf", "CA"), Ok(()));
        assert_eq!(t.check("C10-1", "C10-1", "CA"), Ok(()), "location left out: the license");
        assert!(t.check("C10-1", "denver", "CO").is_err_and(|e| e.contains("another license")));
        assert!(t.check("C10-1", "oakland", "CO").is_err_and(|e| e.contains("state")));
        assert!(t.check("C10-1", "warehouse-9", "CA").is_err_and(|e| e.contains("not one of the license's locations")));
        assert!(t.check("C10-1", "C10-1", "NV").is_err_and(|e| e.contains("state of the line's license")));
        assert_eq!(t.check("UNKNOWN", "elsewhere", "WA"), Ok(()), "not the operator's: not checked");
        assert!(t.check("UNKNOWN", "denver", "CO").is_err(), "another tenant's location under an unknown license");
    }
}
