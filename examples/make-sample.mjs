// Rebuilds examples/app.db, the small SQLite database the README's first command backs up and restores.
import Database from "better-sqlite3";
import { rmSync } from "node:fs";

const file = new URL("./app.db", import.meta.url).pathname;
rmSync(file, { force: true });
const db = new Database(file);
db.exec(`
  CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, country TEXT, created_at TEXT NOT NULL);
  CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, title TEXT NOT NULL, price_cents INTEGER NOT NULL, image BLOB);
  CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), product_id INTEGER NOT NULL REFERENCES products(id),
                       quantity INTEGER NOT NULL CHECK (quantity > 0), note TEXT, ordered_at TEXT NOT NULL);
  CREATE INDEX orders_by_customer ON orders(customer_id);
  CREATE VIEW order_totals AS SELECT o.customer_id, sum(o.quantity * p.price_cents) AS total_cents FROM orders o JOIN products p ON p.id = o.product_id GROUP BY o.customer_id;
  CREATE TRIGGER no_negative_price BEFORE INSERT ON products WHEN NEW.price_cents < 0 BEGIN SELECT RAISE(ABORT, 'negative price'); END;
`);
const countries = ["DE", "FR", "JP", "BR", "US", "IN", "NG", "SE"];
const names = ["Zoë Müller", "Łukasz Nowak", "Ana María", "陈伟", "Олег", "O'Brien", "Nguyễn Văn A", "Chloé"];
const insC = db.prepare("INSERT INTO customers (name, email, country, created_at) VALUES (?, ?, ?, ?)");
const insP = db.prepare("INSERT INTO products (sku, title, price_cents, image) VALUES (?, ?, ?, ?)");
const insO = db.prepare("INSERT INTO orders (customer_id, product_id, quantity, note, ordered_at) VALUES (?, ?, ?, ?, ?)");
let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
db.transaction(() => {
  for (let i = 1; i <= 500; i++) insC.run(`${names[i % names.length]} #${i}`, `user${i}@example.com`, countries[i % countries.length], new Date(Date.UTC(2024, 0, 1) + i * 3600e3).toISOString());
  for (let i = 1; i <= 200; i++) insP.run(`SKU-${String(i).padStart(5, "0")}`, `Product ${i} — “special” edition`, Math.floor(rnd() * 100000), i % 10 === 0 ? Buffer.from([0, 1, 2, 255, i % 256]) : null);
  for (let i = 1; i <= 5000; i++) insO.run(1 + Math.floor(rnd() * 500), 1 + Math.floor(rnd() * 200), 1 + Math.floor(rnd() * 5), i % 7 === 0 ? null : `note ${i}`, new Date(Date.UTC(2025, 0, 1) + i * 600e3).toISOString());
})();
db.close();
console.log(`wrote ${file}`);
