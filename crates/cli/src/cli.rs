//! The command line: global flags (service URLs, token) and the subcommands.

use clap::{Args, Parser, Subcommand};

/// `emporium`: the command line for the Emporium commerce backend.
#[derive(Debug, Parser)]
#[command(
    name = "emporium",
    version,
    about = "Command line for the Emporium commerce backend",
    long_about = "Command line for the Emporium commerce backend.\n\n\
        Start the services with `make run`, then `emporium login` (or `emporium demo` \
        for a narrated tour). The access token from `login` is kept in \
        $XDG_CONFIG_HOME/emporium/token (or ~/.config/emporium/token); --token or \
        EMPORIUM_TOKEN overrides it.",
    after_help = "Examples:\n  \
        emporium signup --email ada@example.com --name Ada --password 'correct horse'\n  \
        emporium login --email ada@example.com --password 'correct horse'\n  \
        emporium products list\n  \
        emporium order place --item MUG-1=2 --item TEE-1=1 --payment-method pm_card_ok\n  \
        emporium order watch"
)]
pub struct Cli {
    /// Where the services are and who is calling.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// gRPC URL of the user service
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_USER_URL",
        hide_env_values = true,
        help_heading = "Global options",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub user_url: String,
    /// gRPC URL of the inventory service
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_INVENTORY_URL",
        hide_env_values = true,
        help_heading = "Global options",
        default_value = "http://127.0.0.1:50052",
        value_name = "URL"
    )]
    pub inventory_url: String,
    /// gRPC URL of the payment service
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_PAYMENT_URL",
        hide_env_values = true,
        help_heading = "Global options",
        default_value = "http://127.0.0.1:50053",
        value_name = "URL"
    )]
    pub payment_url: String,
    /// gRPC URL of the order service
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_ORDER_URL",
        hide_env_values = true,
        help_heading = "Global options",
        default_value = "http://127.0.0.1:50054",
        value_name = "URL"
    )]
    pub order_url: String,
    /// Access token to send [default: the one stored by `emporium login`]
    #[arg(
        long,
        global = true,
        env = "EMPORIUM_TOKEN",
        hide_env_values = true,
        help_heading = "Global options",
        value_name = "JWT"
    )]
    pub token: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a customer account
    Signup(SignupArgs),
    /// Log in and keep the access token for the next commands
    Login(LoginArgs),
    /// Forget the stored access token
    Logout,
    /// Show the user the access token belongs to
    Whoami,
    /// Browse and manage the product catalogue
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Change stock levels (admin)
    #[command(subcommand)]
    Stock(StockCommand),
    /// Place, read, cancel and watch orders
    #[command(subcommand)]
    Order(OrderCommand),
    /// Run a narrated end-to-end story against the running stack (`make run`)
    Demo(DemoArgs),
    /// Write a development CA and a certificate per service for mutual TLS (`make certs`)
    DevCerts(DevCertsArgs),
}

/// `emporium signup`.
#[derive(Debug, Args)]
pub struct SignupArgs {
    /// Email address to sign up with
    #[arg(long)]
    pub email: String,
    /// Display name
    #[arg(long)]
    pub name: String,
    /// Password, 8 to 128 characters
    #[arg(long, env = "EMPORIUM_PASSWORD", hide_env_values = true)]
    pub password: String,
}

/// `emporium login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Email address of the account
    #[arg(long)]
    pub email: String,
    /// Password of the account
    #[arg(long, env = "EMPORIUM_PASSWORD", hide_env_values = true)]
    pub password: String,
}

/// `emporium products ...`.
#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    /// List the catalogue with stock levels
    List,
    /// Show one product
    Get {
        /// The product's SKU
        sku: String,
    },
    /// Add a product to the catalogue, with no stock (admin)
    Create(CreateProductArgs),
}

/// `emporium products create`.
#[derive(Debug, Args)]
pub struct CreateProductArgs {
    /// Stock-keeping unit: A-Z, 0-9, "-" and "_", unique
    #[arg(long)]
    pub sku: String,
    /// Display name
    #[arg(long)]
    pub name: String,
    /// Price of one unit in minor units of the currency (1999 is 19.99 EUR)
    #[arg(long, value_name = "MINOR_UNITS", value_parser = clap::value_parser!(i64).range(1..))]
    pub price: i64,
    /// Currency of the price: the catalogue currency of the inventory service
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Free-text description
    #[arg(long)]
    pub description: Option<String>,
}

/// `emporium stock ...`.
#[derive(Debug, Subcommand)]
pub enum StockCommand {
    /// Add units to or remove units from a product's stock on hand (admin)
    Adjust(AdjustStockArgs),
}

/// `emporium stock adjust`.
#[derive(Debug, Args)]
pub struct AdjustStockArgs {
    /// The product's SKU
    #[arg(long)]
    pub sku: String,
    /// Units to add (positive) or remove (negative, e.g. --delta -3)
    #[arg(long, allow_negative_numbers = true)]
    pub delta: i64,
    /// Why the stock changes, kept in the stock ledger
    #[arg(long)]
    pub reason: String,
    /// Idempotency key: repeat a call with the same key to retry it safely [default: a new UUID]
    #[arg(long)]
    pub key: Option<String>,
}

/// `emporium order ...`.
#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Place an order and print how it ended (CONFIRMED or CANCELLED with a reason)
    Place(PlaceOrderArgs),
    /// Show one order
    Get {
        /// The order's id
        id: String,
    },
    /// List your orders (an admin sees everyone's), newest first
    List {
        /// Show at most this many orders
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Cancel a confirmed order: refund it and return its goods to stock
    Cancel {
        /// The order's id
        id: String,
        /// Why, in your words (becomes the order's cancel detail)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print order status changes live, until Ctrl-C or the stream ends
    Watch {
        /// Watch only this order [default: all of your orders]
        id: Option<String>,
    },
}

/// `emporium order place`.
#[derive(Debug, Args)]
pub struct PlaceOrderArgs {
    /// What to order, as SKU=QUANTITY; repeat for more lines
    #[arg(long = "item", value_name = "SKU=QTY", required = true, value_parser = parse_item)]
    pub items: Vec<Item>,
    /// How to pay (test methods: pm_card_ok, pm_card_declined, pm_card_insufficient_funds)
    #[arg(long)]
    pub payment_method: String,
    /// Idempotency key: repeat a call with the same key to retry it safely [default: a new UUID]
    #[arg(long)]
    pub key: Option<String>,
}

/// `emporium demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Email of the bootstrap admin
    #[arg(
        long,
        env = "EMPORIUM_USER__ADMIN_EMAIL",
        hide_env_values = true,
        default_value = "admin@emporium.local"
    )]
    pub admin_email: String,
    /// Password of the bootstrap admin
    #[arg(
        long,
        env = "EMPORIUM_USER__ADMIN_PASSWORD",
        default_value = "admin-password",
        hide_env_values = true
    )]
    pub admin_password: String,
}

/// `emporium dev-certs`.
#[derive(Debug, Args)]
pub struct DevCertsArgs {
    /// Directory to write ca.pem, <service>.pem and <service>-key.pem into
    #[arg(long, default_value = "certs", value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Replace certificates that already exist there (all of them, with a new CA)
    #[arg(long)]
    pub force: bool,
}

/// One line of an order to place: a SKU and a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The product's SKU, as typed.
    pub sku: String,
    /// Units to order, at least 1.
    pub quantity: i64,
}

/// Parses `SKU=QTY` (for example `MUG-1=2`); the quantity must be a whole number
/// of at least 1. Other checks (SKU format, upper bounds) are the order service's.
pub fn parse_item(s: &str) -> Result<Item, String> {
    let Some((sku, qty)) = s.split_once('=') else {
        return Err(format!("expected SKU=QTY (for example MUG-1=2), got {s:?}"));
    };
    let sku = sku.trim();
    if sku.is_empty() {
        return Err(format!("missing SKU before '=' in {s:?}"));
    }
    let quantity = match qty.trim().parse::<i64>() {
        Ok(q) if q >= 1 => q,
        _ => {
            return Err(format!(
                "quantity must be a whole number of at least 1, got {:?}",
                qty.trim()
            ));
        }
    };
    Ok(Item {
        sku: sku.to_owned(),
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn parses_sku_and_quantity() {
        let item = parse_item("MUG-1=2").unwrap();
        assert_eq!(
            item,
            Item {
                sku: "MUG-1".into(),
                quantity: 2
            }
        );
        assert_eq!(parse_item(" TEE_2 = 10 ").unwrap().quantity, 10);
    }

    #[test]
    fn rejects_malformed_items() {
        for bad in [
            "MUG-1",
            "=2",
            "MUG-1=",
            "MUG-1=0",
            "MUG-1=-3",
            "MUG-1=two",
            "A=1=2",
        ] {
            assert!(parse_item(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn items_repeat_and_negative_deltas_parse() {
        let cli = Cli::try_parse_from([
            "emporium",
            "order",
            "place",
            "--item",
            "A=1",
            "--item",
            "B=2",
            "--payment-method",
            "pm_card_ok",
        ])
        .unwrap();
        let Command::Order(OrderCommand::Place(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.items.len(), 2);

        let cli = Cli::try_parse_from([
            "emporium", "stock", "adjust", "--sku", "A", "--delta", "-3", "--reason", "damaged",
        ])
        .unwrap();
        let Command::Stock(StockCommand::Adjust(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.delta, -3);
    }
}
