use chrono::TimeZone;

use super::*;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

#[test]
fn parses_cadences_and_rejects_bad_ones() {
    for text in ["P1M", "P1Y", "P2W", "P1D", "PT1H", "P1DT12H", "P3M"] {
        let cadence = BillingCadence::parse(text).unwrap();
        assert_eq!(cadence.iso(), text);
    }
    assert!(matches!(
        BillingCadence::parse("PT30M"),
        Err(Error::UnderAnHour { .. })
    ));
    for text in ["", "P", "1M", "P0D", "PT", "P1.5M", "-P1M", "P1H"] {
        assert!(
            matches!(
                BillingCadence::parse(text),
                Err(Error::InvalidDuration { .. })
            ),
            "{text}"
        );
    }
    assert!(BillingCadence::parse_any("PT30M").is_ok());
}

/// A month-end anchor is clamped per period and recovers: Jan 31 → Feb 29 → Mar 31 (2024).
#[test]
fn monthly_periods_are_computed_from_the_anchor() {
    let cadence = BillingCadence::parse("P1M").unwrap();
    let anchor = at(2024, 1, 31, 0);
    let expected = [
        (at(2024, 1, 31, 0), at(2024, 2, 29, 0)),
        (at(2024, 2, 29, 0), at(2024, 3, 31, 0)),
        (at(2024, 3, 31, 0), at(2024, 4, 30, 0)),
        (at(2024, 4, 30, 0), at(2024, 5, 31, 0)),
    ];
    for (n, (from, to)) in expected.into_iter().enumerate() {
        assert_eq!(
            cadence.period(anchor, n as i64).unwrap(),
            Period { from, to }
        );
    }
    assert_eq!(
        cadence.period(anchor, -1).unwrap(),
        Period {
            from: at(2023, 12, 31, 0),
            to: at(2024, 1, 31, 0)
        }
    );
    let non_leap = cadence.period(at(2023, 1, 31, 0), 1).unwrap();
    assert_eq!(non_leap.from, at(2023, 2, 28, 0));
}

#[test]
fn period_containing_is_half_open() {
    let cadence = BillingCadence::parse("P1DT12H").unwrap();
    let anchor = at(2025, 3, 1, 0);
    let period = cadence
        .period_containing(anchor, at(2025, 3, 2, 12))
        .unwrap();
    assert_eq!(
        period,
        Period::new(at(2025, 3, 2, 12), at(2025, 3, 4, 0)).unwrap()
    );
    let before = cadence
        .period_containing(anchor, at(2025, 2, 28, 13))
        .unwrap();
    assert_eq!(before.from, at(2025, 2, 27, 12));
    assert!(before.contains(at(2025, 2, 28, 13)) && !before.contains(before.to));
    let yearly = BillingCadence::parse("P1Y").unwrap();
    let leap = yearly
        .period_containing(at(2024, 2, 29, 0), at(2025, 6, 1, 0))
        .unwrap();
    assert_eq!(
        (leap.from, leap.to),
        (at(2025, 2, 28, 0), at(2026, 2, 28, 0))
    );
}

#[test]
fn share_of_a_period_is_nanosecond_exact_to_sixteen_places() {
    let full = Period::new(at(2025, 4, 1, 0), at(2025, 5, 1, 0)).unwrap();
    let half = Period::new(at(2025, 4, 16, 0), at(2025, 5, 1, 0)).unwrap();
    assert_eq!(half.share_of(&full), Decimal::new(5, 1));
    let third = Period::new(at(2025, 4, 21, 0), at(2025, 5, 1, 0)).unwrap();
    assert_eq!(third.share_of(&full).to_string(), "0.3333333333333333");
    let two_thirds = Period::new(at(2025, 4, 11, 0), at(2025, 5, 1, 0)).unwrap();
    assert_eq!(two_thirds.share_of(&full).to_string(), "0.6666666666666667");
    assert!(Period::new(full.to, full.from).is_err());
}

/// A subscription active from Apr 10 to Jun 20, billed monthly from an anchor on the 1st:
/// a partial first and last period, each knowing its full period for pro-rating.
#[test]
fn service_periods_cut_the_schedule_to_the_active_time() {
    let cadence = BillingCadence::parse("P1M").unwrap();
    let active = Period::new(at(2025, 4, 10, 0), at(2025, 6, 20, 0)).unwrap();
    let periods = cadence
        .service_periods(at(2025, 1, 1, 0), active, 12)
        .unwrap();
    let got: Vec<(Period, Period)> = periods.iter().map(|p| (p.service, p.full)).collect();
    let month = |m: u32| Period::new(at(2025, m, 1, 0), at(2025, m + 1, 1, 0)).unwrap();
    assert_eq!(
        got,
        [
            (
                Period::new(at(2025, 4, 10, 0), at(2025, 5, 1, 0)).unwrap(),
                month(4)
            ),
            (month(5), month(5)),
            (
                Period::new(at(2025, 6, 1, 0), at(2025, 6, 20, 0)).unwrap(),
                month(6)
            ),
        ]
    );
    assert_eq!(
        periods[0].service.share_of(&periods[0].full),
        Decimal::new(7, 1)
    );
    assert!(matches!(
        cadence.service_periods(at(2025, 1, 1, 0), active, 2),
        Err(Error::TooManyPeriods { max: 2, .. })
    ));
}

#[test]
fn periods_serialize_as_rfc3339() {
    let period = Period::new(at(2025, 4, 1, 0), at(2025, 5, 1, 0)).unwrap();
    assert_eq!(
        serde_json::to_value(period).unwrap(),
        serde_json::json!({"from": "2025-04-01T00:00:00Z", "to": "2025-05-01T00:00:00Z"})
    );
}

#[test]
fn cadences_align_as_openmeter_has_it() {
    let c = |text: &str| BillingCadence::parse(text).unwrap();
    // Equal, or one divides the other whatever the month and day lengths.
    for (plan, card) in [
        ("P1M", "P1M"),
        ("P1Y", "P1M"),
        ("P12M", "P1Y"),
        ("P1M", "P3M"),
        ("P1M", "P1D"),
        ("P1M", "PT1H"),
        ("P2W", "P1W"),
        ("P1W", "P1D"),
        ("P4W", "P2W"),
    ] {
        assert!(c(plan).aligned_with(&c(card)), "{plan} and {card} align");
        assert!(c(card).aligned_with(&c(plan)), "{card} and {plan} align");
    }
    // A 29-day month is not whole weeks; 3 months are not whole 2-month periods.
    for (plan, card) in [
        ("P1M", "P1W"),
        ("P4W", "P1M"),
        ("P3M", "P2M"),
        ("P1D", "PT7H"),
        ("P1M", "P2D"),
    ] {
        assert!(
            !c(plan).aligned_with(&c(card)),
            "{plan} and {card} do not align"
        );
    }
}
