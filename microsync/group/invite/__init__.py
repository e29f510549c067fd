"""One-time pairing for group invites and for linking a new device: two sans-IO state machines.

Theory of operation
-------------------
An issuer draws an :class:`Invite`: a 32-byte :class:`InviteSecret` (published to the group only
as its hash, the :class:`InviteId`), a short code such as ``7-ocean-violin`` for reading aloud,
a purpose (``invite`` a person into a group, or ``link`` a new device of the same person), an
expiry and where to reach the host. A guest redeems it in one of two modes, always talking to a
:class:`PairingHost` through a :class:`PairingGuest`. Messages are canonical CBOR arrays
``[version, kind, ...]``, one frozen dataclass each; the transport around them (Noise) is not
this package's business::

    link mode                                code mode (SPAKE2, guest = A, host = B)
    guest -> LinkHello  [purpose, secret,    guest -> CodeHello   [purpose, nameplate, pake_A]
                         request]            host  -> CodeReply   [pake_B]
    host  -> LinkAdmit  [purpose, response]  guest -> CodeConfirm [confirm_G, nonce, sealed req]
                                             host  -> CodeAdmit   [confirm_H, nonce, sealed resp]
    host  -> Abort [reason]   instead of any reply, when the host refuses

The host hashes a presented secret to its id, so an admin device that knows only the id can
serve a link. A code is the SPAKE2 password; the purpose is bound into the SPAKE2 identities,
the session key's transcript and every AEAD's associated data.

One module per part; this package re-exports every name, so ``microsync.group.invite.X`` keeps
working for all of them:

=====================  ==========================================================
``link.py``            secrets, invite ids, purposes and the link format
``shortcode.py``       short codes and their normalisation
``terms.py``           the issuer's :class:`Invite`, the host's :class:`InviteRecord`
                       and :class:`InviteState`, the callbacks and the admission rules
``messages.py``        the seven typed messages and their strict codec
``session_keys.py``    code mode's SPAKE2, confirmations and payload key
``host.py``            :class:`PairingHost`: its states, one object each, and its table
``guest.py``           :class:`PairingGuest`: the same for the redeeming side
``payloads.py``        what travels inside: join and link requests and their answers
=====================  ==========================================================

The group side (answering the callbacks from the group state, the issuer's book of invites) is
:mod:`microsync.group.join`.

Invariants
----------
* The host enforces, through the group layer's callbacks, single use, revocation and purpose,
  and expiry by its own ``now`` with :data:`INVITE_CLOCK_TOLERANCE_MS` of grace.
* Code mode: once the host has answered with its SPAKE2 message, every outcome but admission
  calls ``burn(invite_id)``: one wrong guess burns the invite.
* Each machine's transitions are one table; any message not in it, any malformed message and any
  refused invite raise :class:`InviteError` or :class:`DecodeError` and leave the machine FAILED
  (input after DONE is refused too). Nothing else escapes for any input bytes.
* No ``repr`` or error message shows a secret, a code or a link.
"""

from microsync.group.invite.guest import (
    GUEST_TRANSITIONS,
    AwaitingCodeAdmit,
    AwaitingCodeReply,
    AwaitingLinkAdmit,
    Failed,
    GuestState,
    GuestStep,
    PairingGuest,
    ReadyForCode,
    ReadyForLink,
    Redeemed,
)
from microsync.group.invite.host import (
    HOST_TRANSITIONS,
    Admitted,
    AwaitingCodeConfirm,
    AwaitingHello,
    Claim,
    HostState,
    HostStep,
    PairingHost,
    Refused,
)
from microsync.group.invite.link import (
    LINK_SCHEME,
    LINK_VERSION,
    MAX_ADDRESSES,
    MAX_LINK_LENGTH,
    SECRET_SIZE,
    InviteId,
    InviteLink,
    InvitePurpose,
    InviteSecret,
    format_link,
    invite_id,
    invite_rendezvous,
    parse_link,
)
from microsync.group.invite.messages import (
    MAX_MESSAGE_SIZE,
    MAX_PAYLOAD_SIZE,
    PROTOCOL_VERSION,
    Abort,
    AbortReason,
    CodeAdmit,
    CodeConfirm,
    CodeHello,
    CodeReply,
    GuestMessage,
    HostMessage,
    Kind,
    LinkAdmit,
    LinkHello,
    Message,
    RecoverAdmit,
    RecoverHello,
    decode_message,
)
from microsync.group.invite.shortcode import (
    DEFAULT_CODE_WORDS,
    MAX_CODE_WORDS,
    MAX_NAMEPLATE,
    MIN_CODE_WORDS,
    ShortCode,
    parse_code,
)
from microsync.group.invite.terms import (
    DEFAULT_INVITE_TTL_MS,
    INVITE_CLOCK_TOLERANCE_MS,
    Admit,
    Burn,
    CheckInvite,
    FindCode,
    Invite,
    InviteRecord,
    InviteState,
)

__all__ = [
    "DEFAULT_CODE_WORDS",
    "DEFAULT_INVITE_TTL_MS",
    "GUEST_TRANSITIONS",
    "HOST_TRANSITIONS",
    "INVITE_CLOCK_TOLERANCE_MS",
    "LINK_SCHEME",
    "LINK_VERSION",
    "MAX_ADDRESSES",
    "MAX_CODE_WORDS",
    "MAX_LINK_LENGTH",
    "MAX_MESSAGE_SIZE",
    "MAX_NAMEPLATE",
    "MAX_PAYLOAD_SIZE",
    "MIN_CODE_WORDS",
    "PROTOCOL_VERSION",
    "SECRET_SIZE",
    "Abort",
    "AbortReason",
    "Admit",
    "Admitted",
    "AwaitingCodeAdmit",
    "AwaitingCodeConfirm",
    "AwaitingCodeReply",
    "AwaitingHello",
    "AwaitingLinkAdmit",
    "Burn",
    "CheckInvite",
    "Claim",
    "CodeAdmit",
    "CodeConfirm",
    "CodeHello",
    "CodeReply",
    "Failed",
    "FindCode",
    "GuestMessage",
    "GuestState",
    "GuestStep",
    "HostMessage",
    "HostState",
    "HostStep",
    "Invite",
    "InviteId",
    "InviteLink",
    "InvitePurpose",
    "InviteRecord",
    "InviteSecret",
    "InviteState",
    "Kind",
    "LinkAdmit",
    "LinkHello",
    "Message",
    "PairingGuest",
    "PairingHost",
    "ReadyForCode",
    "ReadyForLink",
    "RecoverAdmit",
    "RecoverHello",
    "Redeemed",
    "Refused",
    "ShortCode",
    "decode_message",
    "format_link",
    "invite_id",
    "invite_rendezvous",
    "parse_code",
    "parse_link",
]
