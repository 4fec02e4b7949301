//! One conntrack query over a `NETLINK_NETFILTER` socket: the entry of one tuple
//! (`IPCTNL_MSG_CT_GET`, as `conntrack -G` does). The socket answers for the network
//! namespace it was created in, whichever thread uses it later.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

pub use crate::gateway::netlink::NetlinkError;
use crate::gateway::netlink::open_socket;
use crate::gateway::netns::NetnsSocket;

/// One conntrack entry is a few hundred bytes.
const RECEIVE_BUFFER: usize = 8 * 1024;

/// `IPS_DST_NAT` (`uapi/linux/netfilter/nf_conntrack_common.h`): the destination was
/// translated.
pub const IPS_DST_NAT: u32 = 1 << 5;

/// One direction of a connection as conntrack keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub protocol: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FiveTuple {
    /// The other direction: what the peer sends back.
    pub fn reversed(self) -> Self {
        Self {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
        }
    }
}

/// What the kernel knows of a tuple's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The reply direction: its source is the peer actually reached.
    pub reply: FiveTuple,
    /// `CTA_STATUS` bits.
    pub status: u32,
}

impl Entry {
    pub fn destination_translated(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }
}

pub struct ConntrackSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl NetnsSocket for ConntrackSocket {
    fn open() -> std::io::Result<Self> {
        ConntrackSocket::open()
    }
}

impl ConntrackSocket {
    /// A socket in the calling thread's network namespace. Fails with `EPROTONOSUPPORT`
    /// where the kernel has no `nfnetlink`.
    pub fn open() -> std::io::Result<Self> {
        Ok(Self {
            socket: open_socket(NETLINK_NETFILTER)?,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// The entry whose original direction is `tuple`; `None` when conntrack has none
    /// (`ENOENT`: never tracked here, or expired).
    pub fn get(&mut self, tuple: FiveTuple) -> Result<Option<Entry>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let family = match tuple.dst.ip() {
            IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
            IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = sequence;
        let message = NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple_attributes(tuple))]),
        );
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        loop {
            let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut offset = 0;
            while offset < received {
                let answer = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buffer[offset..received])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let length = answer.header.length as usize;
                if length == 0 {
                    break;
                }
                // Messages in one datagram are aligned to 4 bytes.
                offset += (length + 3) & !3;
                // Answers to an earlier request that timed out are not this one's.
                if answer.header.sequence_number != sequence {
                    continue;
                }
                match answer.payload {
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                        ..
                    }) => return entry_of(&attributes, tuple.protocol).map(Some),
                    NetlinkPayload::Error(e) => {
                        return match e.code.map(|c| -c.get()) {
                            Some(libc::ENOENT) => Ok(None),
                            Some(errno) => Err(NetlinkError::Kernel(errno)),
                            None => Ok(None),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(None),
                    _ => {}
                }
            }
        }
    }
}

fn protocol_of(number: u8) -> Protocol {
    match number {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        n => Protocol::Other(n),
    }
}

fn tuple_attributes(tuple: FiveTuple) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(tuple.src.ip()),
            IPTuple::DestinationAddress(tuple.dst.ip()),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(protocol_of(tuple.protocol)),
            ProtoTuple::SourcePort(tuple.src.port()),
            ProtoTuple::DestinationPort(tuple.dst.port()),
        ]),
    ]
}

/// The reply tuple and status of a `IPCTNL_MSG_CT_NEW` answer.
fn entry_of(attributes: &[ConntrackAttribute], protocol: u8) -> Result<Entry, NetlinkError> {
    let mut reply = None;
    let mut status = 0;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleReply(tuple) => reply = five_tuple(tuple, protocol),
            ConntrackAttribute::CtaStatus(bits) => status = bits.bits(),
            _ => {}
        }
    }
    let reply = reply.ok_or_else(|| NetlinkError::Decode("a conntrack entry without its reply tuple".into()))?;
    Ok(Entry { reply, status })
}

fn five_tuple(attributes: &[Tuple], protocol: u8) -> Option<FiveTuple> {
    let (mut src, mut dst, mut sport, mut dport) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(parts) => {
                for part in parts {
                    match part {
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(FiveTuple {
        protocol,
        src: SocketAddr::new(src?, sport?),
        dst: SocketAddr::new(dst?, dport?),
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_netfilter::conntrack::Status;

    use super::*;

    fn t(src: &str, dst: &str) -> FiveTuple {
        FiveTuple {
            protocol: 6,
            src: src.parse().expect("address"),
            dst: dst.parse().expect("address"),
        }
    }

    #[test]
    fn an_answer_gives_the_reply_tuple_and_whether_the_destination_was_translated() {
        let orig = t("198.18.1.2:40000", "198.18.9.9:80");
        let reply = t("198.18.4.2:8080", "198.18.1.2:40000");
        let answer = [
            ConntrackAttribute::CtaTupleOrig(tuple_attributes(orig)),
            ConntrackAttribute::CtaTupleReply(tuple_attributes(reply)),
            ConntrackAttribute::CtaStatus(Status::from_bits_retain(IPS_DST_NAT | 0x8)),
        ];
        let entry = entry_of(&answer, 6).expect("an entry");
        assert_eq!(entry.reply, reply);
        assert!(entry.destination_translated());
        assert!(entry_of(&answer[..1], 6).is_err());
        assert_eq!(orig.reversed().reversed(), orig);
    }

    #[test]
    fn a_request_serializes_with_the_conntrack_get_type() {
        let message = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple_attributes(t(
                "198.18.1.2:40000",
                "198.18.9.9:80",
            )))]),
        );
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.finalize();
        // NFNL_SUBSYS_CTNETLINK (1) << 8 | IPCTNL_MSG_CT_GET (1).
        assert_eq!(packet.header.message_type, 0x0101);
    }
}
