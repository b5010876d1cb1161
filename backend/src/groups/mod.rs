//! Groups: convs with a name, an owner, admins and members.
//!
//! - [`create`](mod@create): `group.create`.
//! - [`info`]: `group.get`, and the group topics a connection follows.
//! - [`admin`]: changes under the group's lock (`group.update`,
//!   `group.members.*`, `group.transfer`) and `group.leave`.
//! - [`invitations`]: consent to join (`groups_from`), invitations,
//!   `group.join`, `group.decline`, `settings.*`.
//! - [`change`]: what every change shares (version, event, caps).

pub mod admin;
pub mod change;
pub mod create;
pub mod info;
pub mod invitations;

pub use admin::{
    leave, members_add, members_mute, members_remove, members_set_role, transfer, update,
    JOIN_POLICIES,
};
pub use create::group_create;
pub use info::{group_get, group_topics, MEMBERS_PAGE_MAX};
