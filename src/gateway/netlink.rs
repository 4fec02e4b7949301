//! Route, link and address queries over one rtnetlink socket. The socket answers for the
//! network namespace it was created in, whichever thread uses it later.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::subnet::{InterfaceSubnets, Prefix};

/// A kernel that does not answer within this time is taken as failing, so one stuck
/// namespace cannot hold a scrape.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Enough for one datagram of a dump (the kernel fills up to about a page per message).
const RECEIVE_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel refused the request: {}", errno_name(*.0))]
    Kernel(i32),
    #[error("undecodable netlink answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The `errno` label of `sonde_gateway_netlink_errors_total`.
    pub fn errno_label(&self) -> String {
        match self {
            Self::Kernel(errno) => errno_name(*errno),
            Self::Io(e) => e.raw_os_error().map_or_else(|| "io".to_owned(), errno_name),
            Self::Decode(_) => "decode".to_owned(),
        }
    }
}

/// The symbolic name of the errnos a route lookup meets, else the number.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOBUFS => "ENOBUFS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        _ => return errno.to_string(),
    };
    name.to_owned()
}

/// The route the kernel would use: the next hop and the interface towards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub gateway: IpAddr,
    pub oif: u32,
}

/// A netlink socket of `protocol` in the calling thread's network namespace, connected to
/// the kernel, whose reads give up after [`ANSWER_TIMEOUT`] (a kernel that never answers
/// must not hold a scrape). Shared by the route and the conntrack sockets.
pub fn open_socket(protocol: isize) -> std::io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = libc::timeval {
        tv_sec: ANSWER_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: a valid socket fd and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

pub struct RouteSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RouteSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Self> {
        Ok(Self {
            socket: open_socket(NETLINK_ROUTE)?,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// `ip route get <dst> from <src>`: `None` when the route has no gateway (direct, local,
    /// or an unspecified next hop).
    pub fn route_get(&mut self, src: IpAddr, dst: IpAddr) -> Result<Option<Route>, NetlinkError> {
        let (family, bits) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        message.header.destination_prefix_length = bits;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        if src.is_ipv4() == dst.is_ipv4() && !src.is_unspecified() {
            message.header.source_prefix_length = bits;
            message.attributes.push(RouteAttribute::Source(RouteAddress::from(src)));
        }
        let answers = self.request(RouteNetlinkMessage::GetRoute(message), false)?;
        Ok(answers
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewRoute(route) => Some(gateway_of(&route)),
                _ => None,
            })
            .flatten())
    }

    /// The interface's name and every address on it.
    pub fn interface(&mut self, index: u32) -> Result<InterfaceSubnets, NetlinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        let name = self
            .request(RouteNetlinkMessage::GetLink(link), false)?
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => link.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                }),
                _ => None,
            })
            .ok_or(NetlinkError::Kernel(libc::ENODEV))?;
        let prefixes = self
            .request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), true)?
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewAddress(addr) if addr.header.index == index => prefix_of(&addr),
                _ => None,
            })
            .collect();
        Ok(InterfaceSubnets { name, prefixes })
    }

    /// Sends one request and collects the answers to it (all parts of a dump).
    fn request(&mut self, message: RouteNetlinkMessage, dump: bool) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut answers = Vec::new();
        loop {
            let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let datagram = &self.buffer[..received.min(self.buffer.len())];
            if let Answered::Yes = decode_datagram(datagram, sequence, dump, &mut answers)? {
                return Ok(answers);
            }
        }
    }
}

/// Whether a datagram ended the answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    Yes,
    /// More datagrams are to come (a dump's next part).
    NotYet,
}

/// Decodes one datagram of answers to request `sequence` into `answers`: the kernel's
/// bytes, so every length is checked (by the decoder) and a message that claims no length
/// ends the datagram.
pub fn decode_datagram(
    datagram: &[u8],
    sequence: u32,
    dump: bool,
    answers: &mut Vec<RouteNetlinkMessage>,
) -> Result<Answered, NetlinkError> {
    let mut offset = 0;
    while offset < datagram.len() {
        let bytes = &datagram[offset..];
        let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        let length = answer.header.length as usize;
        if length == 0 {
            break;
        }
        // Messages in one datagram are aligned to 4 bytes.
        offset = offset.saturating_add(length.saturating_add(3) & !3);
        // Answers to an earlier request that timed out are not this one's.
        if answer.header.sequence_number != sequence {
            continue;
        }
        match answer.payload {
            NetlinkPayload::InnerMessage(inner) => {
                answers.push(inner);
                if !dump {
                    return Ok(Answered::Yes);
                }
            }
            NetlinkPayload::Error(e) => {
                return match e.code {
                    // Saturating: an answer claiming i32::MIN is no errno (found by fuzzing).
                    Some(code) => Err(NetlinkError::Kernel(code.get().saturating_neg())),
                    None => Ok(Answered::Yes),
                };
            }
            NetlinkPayload::Done(_) => return Ok(Answered::Yes),
            _ => {}
        }
    }
    Ok(Answered::NotYet)
}

/// What sonde takes from decoded answers: a route's gateway, an address's prefix, a link's
/// name (for the fuzz test, which feeds it every answer it decodes).
pub fn use_answer(answer: &RouteNetlinkMessage) -> Option<String> {
    match answer {
        RouteNetlinkMessage::NewRoute(route) => gateway_of(route).map(|r| format!("{} {}", r.gateway, r.oif)),
        RouteNetlinkMessage::NewAddress(address) => prefix_of(address).map(|p| format!("{}/{}", p.addr, p.len)),
        RouteNetlinkMessage::NewLink(link) => link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        }),
        _ => None,
    }
}

/// The gateway of a unicast route; other kinds (local, blackhole, unreachable) have none.
fn gateway_of(route: &RouteMessage) -> Option<Route> {
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut gateway = None;
    let mut oif = 0;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(RouteAddress::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(index) => oif = *index,
            _ => {}
        }
    }
    gateway
        .filter(|g| !g.is_unspecified())
        .map(|gateway| Route { gateway, oif })
}

/// An address with its prefix length; for IPv4 the local address (on point-to-point
/// links `IFA_ADDRESS` is the peer's).
fn prefix_of(message: &AddressMessage) -> Option<Prefix> {
    let mut address = None;
    let mut local = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    local.or(address).map(|addr| Prefix {
        addr,
        len: message.header.prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer whose code is i32::MIN (no errno) is an error, not a panic.
    #[test]
    fn an_error_answer_with_the_least_code_is_an_error() {
        use netlink_packet_core::ErrorMessage;
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(i32::MIN);
        let mut header = NetlinkHeader::default();
        header.sequence_number = 7;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::<RouteNetlinkMessage>::Error(error));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        let outcome = decode_datagram(&bytes, 7, false, &mut Vec::new());
        assert!(matches!(outcome, Err(NetlinkError::Kernel(i32::MAX))), "{outcome:?}");
    }

    #[test]
    fn errno_labels_are_names_when_known() {
        assert_eq!(errno_name(libc::ENETUNREACH), "ENETUNREACH");
        assert_eq!(errno_name(9999), "9999");
        assert_eq!(NetlinkError::Kernel(libc::EINVAL).errno_label(), "EINVAL");
        assert_eq!(NetlinkError::Decode("x".into()).errno_label(), "decode");
        let timeout = NetlinkError::Io(std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(timeout.errno_label(), "EAGAIN");
    }

    #[test]
    fn only_unicast_routes_with_a_real_next_hop_have_a_gateway() {
        let mut route = RouteMessage::default();
        route.header.kind = RouteType::Unicast;
        route.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet("198.18.1.1".parse().expect("ip"))),
            RouteAttribute::Oif(7),
        ];
        assert_eq!(
            gateway_of(&route),
            Some(Route {
                gateway: "198.18.1.1".parse().expect("ip"),
                oif: 7
            })
        );
        route.header.kind = RouteType::Local;
        assert_eq!(gateway_of(&route), None);
        route.header.kind = RouteType::Unicast;
        route.attributes[0] = RouteAttribute::Gateway(RouteAddress::Inet(std::net::Ipv4Addr::UNSPECIFIED));
        assert_eq!(gateway_of(&route), None);
        route.attributes.remove(0);
        assert_eq!(gateway_of(&route), None);
    }
}
