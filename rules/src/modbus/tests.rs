use super::*;

/// Bytes from a hex string with optional spaces.
fn b(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn req(hex: &str) -> Result<Request<'static>, DecodeError> {
    let bytes: &'static [u8] = Box::leak(b(hex).into_boxed_slice());
    Request::decode(bytes)
}

fn resp(hex: &str) -> Result<Response<'static>, DecodeError> {
    let bytes: &'static [u8] = Box::leak(b(hex).into_boxed_slice());
    Response::decode(bytes)
}

// ---- requests, one per function code ----

#[test]
fn read_coils_request_decodes_table_address_quantity() {
    assert_eq!(
        req("01 0013 0025").unwrap(),
        Request::Read {
            table: Table::Coils,
            address: 0x13,
            quantity: 0x25
        }
    );
}

#[test]
fn reads_of_each_table_map_to_their_function() {
    for (fc, table) in [
        (1, Table::Coils),
        (2, Table::DiscreteInputs),
        (3, Table::HoldingRegisters),
        (4, Table::InputRegisters),
    ] {
        let r = req(&format!("{fc:02x} 0000 0001")).unwrap();
        assert_eq!(r.read_range(), Some((table, 0, 1)));
        assert_eq!(r.function().code(), fc);
        assert_eq!(r.class(), FunctionClass::Read);
    }
}

#[test]
fn write_single_coil_accepts_only_on_and_off() {
    assert_eq!(
        req("05 00ac ff00").unwrap(),
        Request::WriteSingleCoil {
            address: 0xac,
            value: true
        }
    );
    assert_eq!(
        req("05 00ac 0000").unwrap(),
        Request::WriteSingleCoil {
            address: 0xac,
            value: false
        }
    );
    assert_eq!(
        req("05 00ac 1234"),
        Err(DecodeError::InvalidCoilValue(0x1234))
    );
}

#[test]
fn write_single_register_decodes_value() {
    let r = req("06 0001 0003").unwrap();
    assert_eq!(
        r,
        Request::WriteSingleRegister {
            address: 1,
            value: 3
        }
    );
    assert_eq!(r.write_range(), Some((Table::HoldingRegisters, 1, 1)));
    assert_eq!(r.class(), FunctionClass::Write);
}

#[test]
fn read_exception_status_has_no_body() {
    assert_eq!(req("07").unwrap(), Request::ReadExceptionStatus);
    assert_eq!(req("07 00"), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn diagnostics_names_every_sub_function() {
    let r = req("08 0004 0000").unwrap();
    let Request::Diagnostics { sub_function, data } = r else {
        panic!("{r:?}")
    };
    assert_eq!(sub_function, DiagnosticSubFunction::FORCE_LISTEN_ONLY);
    assert_eq!(sub_function.name(), "force_listen_only_mode");
    assert!(sub_function.changes_state());
    assert_eq!(data.iter().collect::<Vec<_>>(), vec![0]);
    let names: Vec<_> = (0..=21u16)
        .map(|c| DiagnosticSubFunction::new(c).name())
        .collect();
    assert_eq!(names[1], "restart_communications_option");
    assert_eq!(names[10], "clear_counters_and_diagnostic_register");
    assert_eq!(names[18], "return_bus_character_overrun_count");
    assert_eq!(names[19], "reserved");
    assert_eq!(names[20], "clear_overrun_counter_and_flag");
    assert_eq!(names[21], "reserved");
    assert_eq!(r.class(), FunctionClass::Diagnostics);
}

#[test]
fn diagnostics_data_must_be_whole_words() {
    assert_eq!(req("08 0000 12"), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn comm_event_functions_have_no_body() {
    assert_eq!(req("0b").unwrap(), Request::GetCommEventCounter);
    assert_eq!(req("0c").unwrap(), Request::GetCommEventLog);
}

#[test]
fn write_multiple_coils_unpacks_bits_lsb_first() {
    let r = req("0f 0013 000a 02 cd01").unwrap();
    let Request::WriteMultipleCoils { address, values } = r else {
        panic!("{r:?}")
    };
    assert_eq!(address, 0x13);
    assert_eq!(
        values.iter().map(u8::from).collect::<Vec<_>>(),
        vec![1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    );
    assert_eq!(r.write_range(), Some((Table::Coils, 0x13, 10)));
}

#[test]
fn write_multiple_registers_decodes_values() {
    let r = req("10 0001 0002 04 000a 0102").unwrap();
    let Request::WriteMultipleRegisters { address, values } = r else {
        panic!("{r:?}")
    };
    assert_eq!(address, 1);
    assert_eq!(values.iter().collect::<Vec<_>>(), vec![10, 0x102]);
}

#[test]
fn report_server_id_is_identification() {
    let r = req("11").unwrap();
    assert_eq!(r, Request::ReportServerId);
    assert_eq!(r.class(), FunctionClass::Identification);
}

#[test]
fn read_file_record_validates_each_sub_request() {
    let r = req("14 0e 06 0004 0001 0002 06 0003 0009 0002").unwrap();
    let Request::ReadFileRecord { sub_requests } = r else {
        panic!("{r:?}")
    };
    let refs: Vec<_> = sub_requests
        .iter()
        .map(|s| (s.file, s.record, s.length))
        .collect();
    assert_eq!(refs, vec![(4, 1, 2), (3, 9, 2)]);
    assert_eq!(r.class(), FunctionClass::File);
    assert_eq!(
        req("14 07 05 0004 0001 0002"),
        Err(DecodeError::InvalidReferenceType(5))
    );
}

#[test]
fn write_file_record_carries_record_data() {
    let r = req("15 0d 06 0004 0007 0003 06af 04be 100d").unwrap();
    let Request::WriteFileRecord { records } = r else {
        panic!("{r:?}")
    };
    let first = records.iter().next().unwrap();
    assert_eq!((first.file, first.record, first.length), (4, 7, 3));
    assert_eq!(
        first.data.iter().collect::<Vec<_>>(),
        vec![0x06af, 0x04be, 0x100d]
    );
}

#[test]
fn mask_write_register_decodes_masks() {
    assert_eq!(
        req("16 0004 00f2 0025").unwrap(),
        Request::MaskWriteRegister {
            address: 4,
            and_mask: 0xf2,
            or_mask: 0x25
        }
    );
}

#[test]
fn read_write_multiple_registers_decodes_both_halves() {
    let r = req("17 0003 0006 000e 0003 06 00ff 00ff 00ff").unwrap();
    assert_eq!(r.read_range(), Some((Table::HoldingRegisters, 3, 6)));
    assert_eq!(r.write_range(), Some((Table::HoldingRegisters, 14, 3)));
}

#[test]
fn read_fifo_queue_decodes_pointer() {
    assert_eq!(
        req("18 04de").unwrap(),
        Request::ReadFifoQueue { address: 0x4de }
    );
}

#[test]
fn read_device_identification_decodes_code_and_object() {
    let r = req("2b 0e 01 00").unwrap();
    assert_eq!(
        r,
        Request::ReadDeviceId(DeviceIdRequest {
            code: DeviceIdCode::Basic,
            object_id: ObjectId(0)
        })
    );
    assert_eq!(r.class(), FunctionClass::Identification);
    assert_eq!(req("2b 0e 05 00"), Err(DecodeError::InvalidDeviceIdCode(5)));
    assert_eq!(req("2b 0f 01 00"), Err(DecodeError::UnknownMeiType(0x0f)));
}

#[test]
fn canopen_reference_is_carried_opaquely() {
    assert!(matches!(
        req("2b 0d 01 02 03").unwrap(),
        Request::CanOpen { data: [1, 2, 3] }
    ));
}

#[test]
fn umas_request_names_its_function() {
    let r = req("5a 00 41 ff").unwrap();
    let Request::Umas { function, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(function, UmasFunction::STOP_PLC);
    assert_eq!(function.name(), "stop_plc");
    assert!(function.changes_mode());
    assert_eq!(r.class(), FunctionClass::Programming);
    let upload = UmasFunction::new(0x31);
    assert!(upload.writes_program() && !upload.reads_program());
    let download = UmasFunction::new(0x34);
    assert!(download.reads_program() && !download.writes_program());
}

#[test]
fn modicon_programming_and_user_codes_are_named_not_dropped() {
    for (fc, name, kind) in [
        (125u8, "modicon_program_125", FunctionKind::Reserved),
        (126, "modicon_program_126", FunctionKind::Reserved),
        (65, "user_defined", FunctionKind::UserDefined),
        (72, "user_defined", FunctionKind::UserDefined),
        (100, "user_defined", FunctionKind::UserDefined),
        (110, "user_defined", FunctionKind::UserDefined),
        (42, "reserved", FunctionKind::Reserved),
    ] {
        let r = req(&format!("{fc:02x} 0102")).unwrap();
        assert_eq!(r.function().name(), name);
        assert_eq!(r.function().kind(), kind);
    }
    assert_eq!(
        FunctionCode::new(125).unwrap().class(),
        FunctionClass::Programming
    );
}

#[test]
fn function_names_round_trip() {
    for code in 1..=127u8 {
        if let Ok(f) = FunctionCode::new(code)
            && !matches!(f.name(), "user_defined" | "reserved")
        {
            assert_eq!(FunctionCode::from_name(f.name()), Some(f));
        }
    }
    assert_eq!(FunctionCode::from_name("reserved"), None);
}

// ---- responses ----

#[test]
fn read_bits_response_keeps_all_bits_until_joined() {
    let r = resp("01 03 cd6b05").unwrap();
    let Response::ReadBits { table, values } = r else {
        panic!("{r:?}")
    };
    assert_eq!(table, Table::Coils);
    assert_eq!(values.len(), 24);
    assert_eq!(values.with_count(19).len(), 19);
    assert_eq!(values.get(0), Some(true));
    assert_eq!(values.get(1), Some(false));
}

#[test]
fn read_registers_response_decodes_values() {
    let r = resp("03 06 022b 0000 0064").unwrap();
    let Response::ReadRegisters { values, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(values.iter().collect::<Vec<_>>(), vec![555, 0, 100]);
}

#[test]
fn read_registers_response_with_odd_byte_count_is_rejected() {
    assert_eq!(
        resp("03 03 022b00"),
        Err(DecodeError::ByteCountMismatch {
            declared: 3,
            expected: 2
        })
    );
}

#[test]
fn byte_count_disagreeing_with_data_is_rejected() {
    assert_eq!(
        resp("03 04 022b"),
        Err(DecodeError::ByteCountMismatch {
            declared: 4,
            expected: 2
        })
    );
}

#[test]
fn write_echo_responses_decode() {
    assert_eq!(
        resp("05 00ac ff00").unwrap(),
        Response::WriteSingleCoil {
            address: 0xac,
            value: true
        }
    );
    assert_eq!(
        resp("06 0001 0003").unwrap(),
        Response::WriteSingleRegister {
            address: 1,
            value: 3
        }
    );
    assert_eq!(
        resp("0f 0013 000a").unwrap(),
        Response::WriteMultipleCoils {
            address: 0x13,
            quantity: 10
        }
    );
    assert_eq!(
        resp("10 0001 0002").unwrap(),
        Response::WriteMultipleRegisters {
            address: 1,
            quantity: 2
        }
    );
    assert_eq!(
        resp("16 0004 00f2 0025").unwrap(),
        Response::MaskWriteRegister {
            address: 4,
            and_mask: 0xf2,
            or_mask: 0x25
        }
    );
}

#[test]
fn status_and_counter_responses_decode() {
    assert_eq!(
        resp("07 6d").unwrap(),
        Response::ReadExceptionStatus { status: 0x6d }
    );
    assert_eq!(
        resp("0b ffff 0108").unwrap(),
        Response::GetCommEventCounter {
            status: 0xffff,
            event_count: 0x108
        }
    );
    let r = resp("0c 08 0000 0108 0121 2000").unwrap();
    assert!(matches!(
        r,
        Response::GetCommEventLog {
            event_count: 0x108,
            message_count: 0x121,
            events: [0x20, 0x00],
            ..
        }
    ));
}

#[test]
fn report_server_id_response_carries_its_data() {
    let r = resp("11 04 0aff4142").unwrap();
    assert!(matches!(
        r,
        Response::ReportServerId {
            data: [0x0a, 0xff, 0x41, 0x42]
        }
    ));
}

#[test]
fn read_file_record_response_is_validated() {
    assert!(resp("14 0c 05 06 0df8 0020 05 06 33cd 0040").is_ok());
    assert_eq!(
        resp("14 06 05 07 0df8 0020"),
        Err(DecodeError::InvalidReferenceType(7))
    );
}

#[test]
fn read_fifo_response_checks_counts() {
    let r = resp("18 0006 0002 01b8 1284").unwrap();
    let Response::ReadFifoQueue { values } = r else {
        panic!("{r:?}")
    };
    assert_eq!(values.iter().collect::<Vec<_>>(), vec![0x1b8, 0x1284]);
    assert!(matches!(
        resp("18 0044 0020"),
        Err(DecodeError::QuantityOutOfRange { quantity: 32, .. })
    ));
    assert_eq!(
        resp("18 0008 0002 01b8 1284"),
        Err(DecodeError::ByteCountMismatch {
            declared: 8,
            expected: 6
        })
    );
}

#[test]
fn device_identification_objects_are_decoded() {
    let r =
        resp("2b 0e 01 01 00 00 03 00 07 436f6d70616e79 01 04 5052 4f44 02 04 56322e31").unwrap();
    let Response::ReadDeviceId(id) = r else {
        panic!("{r:?}")
    };
    assert_eq!(id.code, DeviceIdCode::Basic);
    assert!(!id.more_follows);
    let objects: Vec<_> = id.objects().map(|(o, v)| (o.name(), v.to_vec())).collect();
    assert_eq!(
        objects,
        vec![
            ("vendor_name", b"Company".to_vec()),
            ("product_code", b"PROD".to_vec()),
            ("major_minor_revision", b"V2.1".to_vec()),
        ]
    );
    assert_eq!(id.object(ObjectId(1)), Some(&b"PROD"[..]));
}

#[test]
fn device_identification_with_short_object_is_truncated() {
    assert!(matches!(
        resp("2b 0e 01 01 00 00 01 00 07 436f6d"),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn umas_response_keeps_status() {
    assert!(matches!(
        resp("5a 00 fe 0102").unwrap(),
        Response::Umas {
            status: 0xfe,
            data: [1, 2],
            ..
        }
    ));
}

#[test]
fn exception_responses_name_codes_one_to_eleven() {
    let expected = [
        (1, "illegal_function"),
        (2, "illegal_data_address"),
        (3, "illegal_data_value"),
        (4, "server_device_failure"),
        (5, "acknowledge"),
        (6, "server_device_busy"),
        (7, "negative_acknowledge"),
        (8, "memory_parity_error"),
        (10, "gateway_path_unavailable"),
        (11, "gateway_target_failed_to_respond"),
    ];
    for (code, name) in expected {
        let r = resp(&format!("83 {code:02x}")).unwrap();
        assert_eq!(r.function(), FunctionCode::READ_HOLDING_REGISTERS);
        assert_eq!(r.exception().unwrap().name(), name);
    }
    for bad in [0u8, 9, 12, 0xff] {
        assert_eq!(
            resp(&format!("83 {bad:02x}")),
            Err(DecodeError::InvalidExceptionCode(bad))
        );
    }
}

// ---- decode errors, one per kind ----

#[test]
fn empty_pdu_is_truncated() {
    assert_eq!(
        req(""),
        Err(DecodeError::Truncated {
            needed: 1,
            present: 0
        })
    );
}

#[test]
fn short_request_is_truncated() {
    assert_eq!(
        req("03 0000"),
        Err(DecodeError::Truncated {
            needed: 5,
            present: 3
        })
    );
}

#[test]
fn read_quantity_out_of_spec_range_is_rejected() {
    assert_eq!(
        req("03 0000 0000"),
        Err(DecodeError::QuantityOutOfRange {
            quantity: 0,
            min: 1,
            max: 125
        })
    );
    assert_eq!(
        req("03 0000 007e"),
        Err(DecodeError::QuantityOutOfRange {
            quantity: 126,
            min: 1,
            max: 125
        })
    );
    assert!(req("01 0000 07d0").is_ok());
    assert!(matches!(
        req("01 0000 07d1"),
        Err(DecodeError::QuantityOutOfRange { max: 2000, .. })
    ));
}

#[test]
fn range_past_the_address_space_is_rejected() {
    assert_eq!(
        req("03 ffff 0002"),
        Err(DecodeError::AddressOverflow {
            address: 0xffff,
            quantity: 2
        })
    );
    assert!(req("03 ffff 0001").is_ok());
}

#[test]
fn byte_count_disagreeing_with_quantity_is_rejected() {
    assert_eq!(
        req("10 0001 0002 03 000a01"),
        Err(DecodeError::ByteCountMismatch {
            declared: 3,
            expected: 4
        })
    );
    assert_eq!(
        req("0f 0013 000a 01 cd"),
        Err(DecodeError::ByteCountMismatch {
            declared: 1,
            expected: 2
        })
    );
}

#[test]
fn read_write_length_mismatch_from_4sics_is_rejected() {
    // The 4SICS frame that crashed older Zeek: write quantity 2 but byte count 2.
    assert!(matches!(
        req("17 0000 0001 0000 0002 02 0000"),
        Err(DecodeError::ByteCountMismatch { .. })
    ));
}

#[test]
fn unassigned_and_zero_function_codes_are_unknown() {
    for code in [0u8, 25, 40, 44, 64, 73, 89, 92, 99, 111, 124] {
        assert_eq!(
            req(&format!("{code:02x}")),
            Err(DecodeError::UnknownFunction(code))
        );
    }
}

#[test]
fn exception_bit_in_request_is_rejected() {
    assert_eq!(req("83 01"), Err(DecodeError::ExceptionInRequest(0x83)));
}

#[test]
fn trailing_bytes_are_reported_and_tolerated_by_prefix_decoding() {
    assert_eq!(req("03 0000 0001 00"), Err(DecodeError::TrailingBytes(1)));
    let bytes = b("2b 0e 03 01 00");
    let (r, trailing) = Request::decode_prefix(&bytes).unwrap();
    assert_eq!(trailing, 1);
    assert!(matches!(r, Request::ReadDeviceId(_)));
    assert_eq!(resp("81 06 00"), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn every_error_kind_has_a_distinct_label() {
    let mut kinds = DecodeError::KINDS.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), DecodeError::KINDS.len());
}

// ---- MBAP ----

#[test]
fn mbap_header_decodes_and_splits_pipelined_adus() {
    let bytes = b("0001 0000 0006 ff 0300000001 0002 0000 0006 ff 0400000002");
    let (first, rest) = Adu::split(&bytes).unwrap();
    assert_eq!(first.header.transaction_id, 1);
    assert_eq!(first.header.unit_id, 0xff);
    assert_eq!(first.pdu, &b("0300000001")[..]);
    let (second, rest) = Adu::split(rest).unwrap();
    assert_eq!(second.header.transaction_id, 2);
    assert!(rest.is_empty());
}

#[test]
fn mbap_protocol_id_must_be_zero() {
    assert_eq!(
        MbapHeader::decode(&b("0001 0010 0006 0a")),
        Err(DecodeError::InvalidProtocolId(0x10))
    );
}

#[test]
fn mbap_length_must_be_two_to_254() {
    assert_eq!(
        MbapHeader::decode(&b("0001 0000 0001 0a")),
        Err(DecodeError::LengthTooSmall(1))
    );
    assert_eq!(
        MbapHeader::decode(&b("0001 0000 8804 05")),
        Err(DecodeError::LengthTooLarge(0x8804))
    );
    assert!(MbapHeader::decode(&b("0001 0000 00fe 05")).is_ok());
}

#[test]
fn mbap_length_beyond_the_bytes_present_is_a_mismatch() {
    assert_eq!(
        Adu::split(&b("0001 0000 0006 ff 0300")),
        Err(DecodeError::LengthMismatch {
            declared: 6,
            present: 3
        })
    );
}

// ---- RTU ----

#[test]
fn rtu_frame_is_found_by_crc_and_decoding() {
    // Read holding registers, unit 1, address 0, quantity 10: the textbook frame.
    let frame = b("01 03 0000 000a c5cd");
    let found = RtuFrame::find(&frame, crate::Direction::ToServer).unwrap();
    assert_eq!(found.unit_id, 1);
    assert_eq!(found.pdu, &b("03 0000 000a")[..]);
    assert_eq!(found.len, 8);
    assert_eq!(crc16(&b("01 03 0000 000a")), 0xcdc5);
}

#[test]
fn rtu_frame_with_bad_crc_is_not_found() {
    let frame = b("01 03 0000 000a c5ce");
    assert_eq!(RtuFrame::find(&frame, crate::Direction::ToServer), None);
}
